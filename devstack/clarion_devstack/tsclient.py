"""The TypeScript client (``clients/typescript``): install its npm dependencies and build it.

``npm ci`` from the committed package-lock.json, with npm's download cache under
``${CLARION_CACHE_DIR}/npm`` (outside the checkout, shared by every clone), then
``npm run build`` (tsc, then esbuild's single-file browser bundle that the demo dashboard
loads). Both are skipped when nothing they depend on changed (a stamp holds a hash of
their inputs), so calling :func:`ensure_built` before every use is cheap; a lock keeps two
processes (the client's tests, the dashboard's) from building at once.

``python -m clarion_devstack.tsclient`` builds it from a shell (``make`` does).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from clarion_devstack.progress import step
from clarion_devstack.settings import DevstackSettings

#: The build's inputs, relative to the package: a change to any of them rebuilds.
_BUILD_INPUTS = ("package.json", "package-lock.json", "tsconfig.json", "src")


def package_dir(settings: DevstackSettings) -> Path:
    return settings.checkout / "clients" / "typescript"


def browser_bundle(settings: DevstackSettings) -> Path:
    """The single-file ESM bundle for browsers (no dependency: it uses the page's WebSocket)."""
    return package_dir(settings) / "dist" / "browser" / "clarion.js"


def npm_cache(settings: DevstackSettings) -> Path:
    return settings.cache_dir / "npm"


def _digest(root: Path, names: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        path = root / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(root)).encode() + b"\0")
            digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()


def _stamped(stamp: Path, value: str) -> bool:
    return stamp.is_file() and stamp.read_text() == value


def _run(argv: list[str], cwd: Path, what: str) -> None:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({' '.join(argv)}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )


def npm() -> str:
    found = shutil.which("npm")
    if found is None:
        raise RuntimeError("npm not found: the TypeScript client needs Node 20+ and npm on PATH")
    return found


def ensure_built(settings: DevstackSettings) -> Path:
    """Install (``npm ci``) and build the package when its inputs changed; return it."""
    pkg = package_dir(settings)
    cache = npm_cache(settings)
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / ".clarion-typescript.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        deps = _digest(pkg, ["package-lock.json"])
        deps_stamp = pkg / "node_modules" / ".clarion-stamp"
        if not _stamped(deps_stamp, deps):
            with step(f"npm ci in {pkg.relative_to(settings.checkout)} (cache {cache})"):
                _run(
                    [npm(), "ci", "--cache", str(cache), "--prefer-offline", "--no-audit",
                     "--no-fund", "--loglevel=error"],
                    pkg,
                    "npm ci",
                )  # fmt: skip
                deps_stamp.write_text(deps)
        built = _digest(pkg, _BUILD_INPUTS)
        build_stamp = pkg / "dist" / ".clarion-stamp"
        if not _stamped(build_stamp, built):
            with step("build the TypeScript client (tsc, browser bundle)"):
                _run([npm(), "run", "--silent", "build"], pkg, "npm run build")
                build_stamp.write_text(built)
    return pkg


def main() -> int:
    try:
        ensure_built(DevstackSettings.from_environ(os.environ))  # noqa: TID251 - CLI edge
    except RuntimeError as error:
        print(error, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
