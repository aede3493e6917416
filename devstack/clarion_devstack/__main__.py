"""``python -m clarion_devstack {build,up,status,down,env}``: the local stack's command line."""

from __future__ import annotations

import argparse
import json
import os
import sys

from . import install, stack
from .procs import StackError
from .settings import DevstackSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clarion-devstack", description=__doc__)
    parser.add_argument("command", choices=["build", "up", "status", "down", "env"])
    args = parser.parse_args(argv)
    settings = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - the process edge
    try:
        if args.command == "build":
            install.ensure_all(settings)
        elif args.command == "up":
            stack.up(settings)
            print(stack.status(settings))
            print(f"\nenv: {settings.env_file}")
        elif args.command == "status":
            print(stack.status(settings))
            env = stack.read_env(settings)
            return 0 if env is not None and stack.healthy(env) else 1
        elif args.command == "env":
            env = stack.read_env(settings)
            if env is None:
                print("the local stack is down", file=sys.stderr)
                return 1
            print(json.dumps(env, indent=2))
        else:
            stack.down(settings)
            print("the local stack is down")
    except StackError as exc:
        print(f"[clarion] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
