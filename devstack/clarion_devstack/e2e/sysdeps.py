"""Debian packages the end-to-end harness, the demo and the images need.

HAProxy and Chromium; podman, runc and debootstrap for ``make images``; containerd,
catatonit, the CNI plugins, iptables and conntrack for the real node.

``python -m clarion_devstack.e2e.sysdeps`` (run by ``make setup``) installs each missing
one with ``apt-get`` (after one ``apt-get update``) and does nothing when all are
present, so it is cheap to run every time. Installing needs root; without it the
command prints the one line to run instead and fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from clarion_devstack.progress import say, step

#: Binary that proves the package is installed -> Debian package providing it.
PACKAGES: Mapping[str, str] = {
    "/usr/sbin/haproxy": "haproxy",
    "/usr/bin/chromium": "chromium",
    "/usr/bin/chromedriver": "chromium-driver",
    # `make images` (clarion_devstack.images): daemonless builds with runc, the base from
    # debootstrap.
    "/usr/bin/podman": "podman",
    "/usr/sbin/runc": "runc",
    "/usr/sbin/debootstrap": "debootstrap",
    # The local stack's real node (clarion_devstack.node): containerd + runc, the pause
    # image's init, the CNI plugins, and the firewall tools kube-proxy drives.
    "/usr/bin/containerd": "containerd",
    "/usr/bin/catatonit": "catatonit",
    "/usr/lib/cni/bridge": "containernetworking-plugins",
    "/usr/sbin/iptables": "iptables",
    "/usr/sbin/conntrack": "conntrack",
}

HAPROXY = Path("/usr/sbin/haproxy")
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def missing(packages: Mapping[str, str] = PACKAGES) -> list[str]:
    return [package for binary, package in packages.items() if not Path(binary).exists()]


def _apt(argv: Sequence[str]) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}  # noqa: TID251 - child env
    result = subprocess.run(list(argv), env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stdout[-2000:]}{result.stderr}")


def ensure(packages: Mapping[str, str] = PACKAGES) -> list[str]:
    """Install the missing packages; return what was installed."""
    wanted = missing(packages)
    if not wanted:
        return []
    if os.geteuid() != 0:
        runner = "sudo " if shutil.which("sudo") else ""
        raise SystemExit(
            f"missing Debian packages: {' '.join(wanted)}; run:\n"
            f"  {runner}apt-get update && {runner}apt-get install -y {' '.join(wanted)}"
        )
    with step(f"apt-get install {' '.join(wanted)}"):
        _apt(["apt-get", "update", "-q"])
        _apt(["apt-get", "install", "-y", "-q", *wanted])
    return wanted


def main() -> int:
    installed = ensure()
    if installed:
        say(f"installed {', '.join(installed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
