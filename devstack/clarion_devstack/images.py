"""Build the worker and operator images daemonless, from the Dockerfile, into the cache.

``python -m clarion_devstack.images`` (``make images``) and :func:`ensure_images`;
``python -m clarion_devstack.images podman ARGS...`` runs podman on the same store.

1. **The base.** Every stage of the Dockerfile starts ``FROM python:3.11.13-slim-bookworm``.
   No registry can be pulled from here, so a stand-in with the same name and Python
   minor is made from Debian packages: ``debootstrap --variant=minbase bookworm`` plus
   Debian's python3 (3.11), pip and ca-certificates, ``python``/``pip`` on PATH, and pip
   allowed to install system-wide (PEP 668's marker removed *in the stand-in*; the
   Dockerfile is unchanged and still builds on a machine with a registry). Its tarball is
   cached in ``<cache>/python-base-<tag>/`` with a fingerprint of the recipe and imported
   into the image store under the base's full name.
2. **The images.** ``podman build --pull=never`` of the repository's ``Dockerfile``, with
   target and ``COMPONENT`` ``worker``, then ``operator``, with runc, the host's CA bundle
   bind-mounted for the build only, host networking for pip (no bridge or firewall rule
   is created), tagged as the chart and the operator's defaults expect
   (``ghcr.io/clarion/<name>:<version>``). Podman's layer cache makes a change of the
   worker's code rebuild only the layers after the code is copied, and the two images
   share the layers before their dependencies. Each image installs its own distribution
   (``worker/`` or ``operator/``, each with its pyproject.toml) and the contract's,
   nothing else of this repository: the development stack is in neither image. Each
   image is exported to a docker-archive in ``<cache>/image-<name>-<version>/image.tar``
   (for ``ctr -n k8s.io images import``), marked complete with a fingerprint of its base,
   target, Dockerfile and build context (the paths of its :attr:`ImageSpec.context`).

Podman keeps its store under ``<cache>/podman`` with a ``containers.conf`` written
there (runc, cgroupfs, nofile/nproc at or below this process's hard limits), never the
system-wide configuration. Its run state (storage locks, libpod's run-time files, runc's
container states) goes to a tmpfs folder of its own, ``/run/clarion-containers/<store
hash>``, removed again by the last user of the store to finish (:meth:`Podman.in_use`).
Building needs root (debootstrap, runc).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from .install import _complete, _fingerprint, _locked, _run
from .procs import StackError
from .progress import say, step
from .settings import DevstackSettings

#: The base the Dockerfile names, and its fully qualified form in the image store.
BASE_IMAGE = "python:3.11.13-slim-bookworm"
BASE_REFERENCE = f"docker.io/library/{BASE_IMAGE}"
#: The Debian release the base's tag names, and what the stand-in adds to minbase.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-pip", "python-is-python3", "ca-certificates")
#: Image configuration of the stand-in, as in the official image (PATH, locale, command).
BASE_CHANGES = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
    "LABEL org.clarion.stand-in=debootstrap-minbase-bookworm-debian-python3",
)
#: Paths the stand-in drops after debootstrap: package caches, docs, host identity.
BASE_PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/lib/python3.11/EXTERNALLY-MANAGED",
)
#: Bumped whenever the recipe's steps change in a way the constants above do not show.
BASE_RECIPE_REVISION = "1"
FINGERPRINT_LABEL = "org.clarion.fingerprint"

#: What each image's build copies or mounts from the repository root (its build context):
#: the pins and the distributions it installs.
WORKER_CONTEXT = ("constraints.txt", "contract", "worker")
OPERATOR_CONTEXT = ("constraints.txt", "contract", "operator")
#: Every path either image's build uses; the release version is read from their pyprojects.
CONTEXT_PATHS = ("constraints.txt", "contract", "worker", "operator")
#: The distributions whose version is the release version (the images' tag).
RELEASE_PYPROJECTS = (
    "contract/pyproject.toml",
    "worker/pyproject.toml",
    "operator/pyproject.toml",
)
#: The one Dockerfile of both images, at the repository root (their build context).
DOCKERFILE = "Dockerfile"
#: The host's CA bundle, bind-mounted read-only into each build step (pip), never copied.
CA_CERTS = Path("/etc/ssl/certs")
#: The soft and hard nofile/nproc limit given to containers: at most this, at most ours.
ULIMIT_CEILING = 20000


@dataclass(frozen=True)
class ImageSpec:
    """One image: a target of the repository's Dockerfile.

    ``name`` is the target, the ``COMPONENT`` build argument (the distribution the build
    stage copies and installs with the contract's) and the image's name.
    """

    name: str
    #: The paths of the repository its build copies or mounts.
    context: tuple[str, ...]
    dockerfile: str = DOCKERFILE

    def reference(self, version: str) -> str:
        return f"ghcr.io/clarion/{self.name}:{version}"


WORKER = ImageSpec("worker", WORKER_CONTEXT)
OPERATOR = ImageSpec("operator", OPERATOR_CONTEXT)
IMAGES = (WORKER, OPERATOR)


def project_version(checkout: Path) -> str:
    """The product's version: the chart's appVersion and the images' tag.

    The distributions the images install are released together, so their pyprojects
    must agree; a clear error says which one does not.
    """
    versions: dict[str, str] = {}
    for relative in RELEASE_PYPROJECTS:
        data = tomllib.loads((checkout / relative).read_text())
        versions[relative] = str(data["project"]["version"])
    if len(set(versions.values())) != 1:
        listed = ", ".join(f"{path} {version}" for path, version in versions.items())
        raise StackError(f"the product's distributions disagree on the version: {listed}")
    return next(iter(versions.values()))


# --- podman, confined to the cache ---------------------------------------------------


@dataclass(frozen=True)
class Podman:
    """How to call podman with this stack's own store and configuration."""

    store: Path
    runroot: Path
    conf: Path
    #: netavark's run state: rootful podman 4 makes it at a fixed path on any call (not
    #: under ``--runroot``), empty unless a container uses a bridge network (ours don't).
    network_run_dir: Path = Path("/run/containers/networks")

    @classmethod
    def for_settings(cls, settings: DevstackSettings) -> Podman:
        # "podman", not the first store's "containers": that one's libpod database kept
        # its run-time files in /run/libpod, whatever --tmpdir said.
        store = settings.cache_dir / "podman"
        # Run state (locks, mounts) belongs on a tmpfs, one per store.
        tag = hashlib.sha256(str(store).encode()).hexdigest()[:12]
        return cls(
            store=store / "storage",
            runroot=Path("/run/clarion-containers") / tag,
            conf=store / "containers.conf",
        )

    @contextlib.contextmanager
    def in_use(self) -> Iterator[Podman]:
        """Run podman on this store inside; the last user to leave removes the run state.

        Every user holds a shared lock on the store's ``runroot.lock`` meanwhile; one that
        can then take it exclusively is the last, and removes ``runroot`` (and its parent
        when empty) and netavark's empty run folder, so nothing of the store stays on
        ``/run``. podman makes them again on its next call."""
        self.store.parent.mkdir(parents=True, exist_ok=True)
        with (self.store.parent / "runroot.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_SH)
            try:
                yield self
            finally:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    pass  # another build or test still uses the store: it removes it
                else:
                    shutil.rmtree(self.runroot, ignore_errors=True)
                    # Each only when empty: another store's, or another podman's, stays.
                    for folder in (
                        self.runroot.parent,
                        self.network_run_dir,
                        self.network_run_dir.parent,
                    ):
                        with contextlib.suppress(OSError):
                            folder.rmdir()

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root",
            str(self.store),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            # Without it, containers/storage bind-mounts its overlay folder onto itself and
            # leaves that mount on the host.
            "--storage-opt",
            "overlay.skip_mount_home=true",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--runtime",
            str(self.runc),
            # libpod's run-time files under the store's run state too, not in /run/libpod.
            # (libpod's database records the first folder it was given and keeps to it:
            # hence the store's new path.)
            "--tmpdir",
            str(self.runroot / "libpod"),
            *args,
        ]

    @property
    def runc(self) -> Path:
        """runc with its container states under the store's run state, not in /run/runc:
        a script beside the store. (``--runtime-flag root=`` is not enough: the cleanup
        podman runs when a container exits calls runc without it.)"""
        return self.conf.with_name("runc-in-runroot")

    def env(self, environ: Mapping[str, str]) -> dict[str, str]:
        return {**environ, "CONTAINERS_CONF": str(self.conf)}

    def write_conf(self, hard_nofile: int, hard_nproc: int) -> None:
        runc = shutil.which("runc") or "/usr/bin/runc"
        _write_atomically(
            self.runc, f'#!/bin/sh\nexec {runc} --root "{self.runroot / "runc"}" "$@"\n', 0o755
        )
        _write_atomically(self.conf, containers_conf(hard_nofile, hard_nproc, runtime=self.runc))

    def run(
        self, *args: str, log: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = self.argv(*args)
        env = self.env(os.environ)  # noqa: TID251 - child env (PATH, locale)
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("a") as out:
                out.write(f"$ {' '.join(argv)}\n")
                out.flush()
                logged = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
            if check and logged.returncode != 0:
                raise StackError(
                    f"podman {' '.join(args[:2])} ... failed with exit code "
                    f"{logged.returncode}\n--- last lines of {log} ---\n{_tail(log)}"
                )
            return subprocess.CompletedProcess(argv, logged.returncode, "", "")
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise StackError(
                f"podman {' '.join(args[:2])} ... failed with exit code {result.returncode}: "
                f"{result.stderr.strip()[-2000:]}"
            )
        return result

    def image_id(self, reference: str) -> str | None:
        result = self.run("image", "inspect", "--format", "{{.Id}}", reference, check=False)
        return result.stdout.strip() if result.returncode == 0 else None

    def label(self, reference: str, key: str = FINGERPRINT_LABEL) -> str | None:
        """The image's label ``key``, or None when the image is not in the store."""
        result = self.run(
            "image",
            "inspect",
            "--format",
            f'{{{{index .Labels "{key}"}}}}',
            reference,
            check=False,
        )
        if result.returncode != 0:
            return None
        return result.stdout.strip()


def _write_atomically(path: Path, text: str, mode: int = 0o644) -> None:
    """Write ``text`` unless ``path`` holds it already; atomically, as another build may be
    reading it."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.chmod(mode)
    partial.rename(path)


def containers_conf(hard_nofile: int, hard_nproc: int, runtime: Path) -> str:
    """containers.conf for builds and checks: limits no higher than the hard ones we have,
    and ``runtime`` (runc through :attr:`Podman.runc`) for runs and builds alike."""
    nofile = min(hard_nofile, ULIMIT_CEILING)
    nproc = min(hard_nproc, ULIMIT_CEILING)
    return (
        "# Written by clarion_devstack.images; podman reads it through CONTAINERS_CONF.\n"
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        'log_driver = "k8s-file"\n'
        # No network unless a command asks for one: podman's default bridge would leave
        # cni-podman0 and CNI firewall chains on the host after the run.
        'netns = "none"\n'
        "\n"
        "[engine]\n"
        'runtime = "clarion-runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        "\n"
        "[engine.runtimes]\n"
        f'clarion-runc = ["{runtime}"]\n'
    )


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _hard_limits() -> tuple[int, int]:
    def hard(which: int) -> int:
        value = resource.getrlimit(which)[1]
        return ULIMIT_CEILING if value == resource.RLIM_INFINITY else value

    return hard(resource.RLIMIT_NOFILE), hard(resource.RLIMIT_NPROC)


def _require(binaries: Iterable[str]) -> None:
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        raise StackError(
            f"missing {', '.join(missing)}: run `make sysdeps` (Debian packages "
            "podman, runc, debootstrap)"
        )
    if os.geteuid() != 0:
        raise StackError("building the images needs root (debootstrap, runc)")


# --- the base stand-in ----------------------------------------------------------------


def debian_mirror(sources: Iterable[Path], suite: str = BASE_SUITE) -> str:
    """The first Debian archive URI the host's apt sources use for ``suite``."""
    for path in sources:
        if not path.is_file():
            continue
        text = path.read_text()
        if path.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields: dict[str, str] = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.lstrip().startswith("#"):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.strip()
                types = fields.get("types", "").split()
                if "deb" in types and suite in fields.get("suites", "").split():
                    return fields.get("uris", "").split()[0]
        else:
            for line in text.splitlines():
                words = [w for w in line.split() if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                    return words[1]
    raise StackError(f"no Debian {suite} source in {', '.join(str(s) for s in sources)}")


def _apt_sources() -> list[Path]:
    folder = Path("/etc/apt/sources.list.d")
    listed = sorted(folder.glob("*.sources")) + sorted(folder.glob("*.list"))
    return [Path("/etc/apt/sources.list"), *listed]


def base_fingerprint() -> str:
    return _fingerprint(
        BASE_IMAGE.encode(),
        BASE_SUITE.encode(),
        " ".join(BASE_PACKAGES).encode(),
        "\n".join(BASE_CHANGES).encode(),
        "\n".join(BASE_PRUNE).encode(),
        BASE_RECIPE_REVISION.encode(),
    )


def base_dir(cache_dir: Path) -> Path:
    """Where the stand-in base's tarball is cached."""
    return cache_dir / f"python-base-{BASE_IMAGE.split(':', 1)[1]}"


def ensure_base_tarball(settings: DevstackSettings) -> Path:
    """The stand-in base's root filesystem as a tarball, built unless cached."""
    fingerprint = base_fingerprint()
    dest = base_dir(settings.cache_dir)
    tarball = dest / "rootfs.tar"
    with _locked(dest):
        if _complete(dest, fingerprint) and tarball.is_file():
            return tarball
        _require(["debootstrap", "tar"])
        mirror = debian_mirror(_apt_sources())
        dest.mkdir(parents=True, exist_ok=True)
        (dest / ".complete").unlink(missing_ok=True)
        with tempfile.TemporaryDirectory(dir=dest, prefix="rootfs.") as tmp:
            rootfs = Path(tmp) / "rootfs"
            try:
                with step(f"debootstrap {BASE_SUITE} + Debian python3 (stand-in for {BASE_IMAGE})"):
                    _run(
                        [
                            "debootstrap",
                            "--variant=minbase",
                            f"--include={','.join(BASE_PACKAGES)}",
                            BASE_SUITE,
                            str(rootfs),
                            mirror,
                        ],
                        log=dest / "debootstrap.log",
                    )
            finally:
                # A failed debootstrap can leave /proc or /sys mounted inside the tree.
                _unmount_under(rootfs)
            for relative in BASE_PRUNE:
                target = rootfs / relative
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                    target.mkdir()
                else:
                    target.unlink(missing_ok=True)
            # The host's identity stays out of the image (the runtime mounts its own).
            for relative in ("etc/resolv.conf", "etc/hostname"):
                (rootfs / relative).unlink(missing_ok=True)
                (rootfs / relative).write_text("")
            partial = dest / "rootfs.tar.partial"
            with step("pack the base root filesystem"):
                _run(
                    [
                        "tar",
                        "--numeric-owner",
                        "--xattrs",
                        "--sort=name",
                        "-C",
                        str(rootfs),
                        "-cf",
                        str(partial),
                        ".",
                    ],
                    log=dest / "tar.log",
                )
            partial.rename(tarball)
        (dest / ".complete").write_text(fingerprint)
        return tarball


def _unmount_under(root: Path) -> None:
    prefix = f"{root}/"
    mounts = [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1].startswith(prefix)
    ]
    for mountpoint in sorted(mounts, reverse=True):
        subprocess.run(["umount", "--lazy", mountpoint], check=False)


def ensure_base(settings: DevstackSettings, podman: Podman) -> str:
    """Import the stand-in base into podman's store unless the same one is there."""
    fingerprint = base_fingerprint()
    tarball = ensure_base_tarball(settings)
    if podman.label(BASE_REFERENCE) == fingerprint:
        return fingerprint
    changes = [f"--change={change}" for change in BASE_CHANGES]
    changes.append(f"--change=LABEL {FINGERPRINT_LABEL}={fingerprint}")
    with step(f"import the base as {BASE_REFERENCE}"):
        podman.run(
            "import",
            *changes,
            str(tarball),
            BASE_REFERENCE,
            log=tarball.parent / "import.log",
        )
    return fingerprint


# --- the images -----------------------------------------------------------------------


def dockerignore(checkout: Path) -> list[str]:
    """The patterns of the build context's ``.dockerignore`` (comments and blanks dropped)."""
    path = checkout / ".dockerignore"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(relative: str, patterns: Sequence[str]) -> bool:
    """Whether ``.dockerignore`` keeps ``relative`` (or a folder above it) out of the context.

    The subset of the syntax this repository uses: plain paths and globs from the root,
    and ``**/NAME`` for a name at any depth; ``!`` exceptions are not supported.
    """
    parts = relative.split("/")
    for pattern in patterns:
        if pattern.startswith("!"):
            raise StackError(f".dockerignore: exceptions are not supported ({pattern})")
        if pattern.startswith("**/"):
            if any(fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(
            fnmatch("/".join(parts[:i]), pattern.rstrip("/")) for i in range(1, len(parts) + 1)
        ):
            return True
    return False


def context_files(checkout: Path, paths: Sequence[str] = CONTEXT_PATHS) -> list[Path]:
    """Every file under ``paths`` of the build context (what a Dockerfile copies), sorted."""
    patterns = dockerignore(checkout)
    found: list[Path] = []
    for entry in paths:
        path = checkout / entry
        candidates = [path] if path.is_file() else path.rglob("*")
        for candidate in candidates:
            relative = candidate.relative_to(checkout).as_posix()
            if candidate.is_file() and not ignored(relative, patterns):
                found.append(candidate)
    return sorted(found)


def image_fingerprint(checkout: Path, spec: ImageSpec, base: str) -> str:
    parts = [base.encode(), spec.name.encode(), spec.dockerfile.encode()]
    parts.append((checkout / spec.dockerfile).read_bytes())
    ignore = checkout / ".dockerignore"
    parts.append(ignore.read_bytes() if ignore.is_file() else b"")
    for path in context_files(checkout, spec.context):
        parts.append(str(path.relative_to(checkout)).encode())
        parts.append(path.read_bytes())
    return _fingerprint(*parts)


def build_argv(checkout: Path, spec: ImageSpec, reference: str, fingerprint: str) -> list[str]:
    """The ``podman build`` arguments (after the global options) for one image."""
    return [
        "build",
        "--pull=never",
        "--layers",
        "--network=host",
        f"--volume={CA_CERTS}:{CA_CERTS}:ro",
        f"--label={FINGERPRINT_LABEL}={fingerprint}",
        "--file",
        str(checkout / spec.dockerfile),
        "--target",
        spec.name,
        f"--build-arg=COMPONENT={spec.name}",
        "--tag",
        reference,
        str(checkout),
    ]


def ensure_image(settings: DevstackSettings, podman: Podman, spec: ImageSpec, base: str) -> Path:
    """Build and export one image unless its archive is current; return the archive."""
    version = project_version(settings.checkout)
    reference = spec.reference(version)
    fingerprint = image_fingerprint(settings.checkout, spec, base)
    dest = settings.cache_dir / f"image-{spec.name}-{version}"
    archive = dest / "image.tar"
    with _locked(dest):
        if _complete(dest, fingerprint) and archive.is_file():
            if podman.label(reference) != fingerprint:
                with step(f"load {reference} from {archive}"):
                    podman.run("load", "--input", str(archive), log=dest / "load.log")
            return archive
        dest.mkdir(parents=True, exist_ok=True)
        (dest / ".complete").unlink(missing_ok=True)
        log = dest / "build.log"
        log.write_text("")
        previous = podman.image_id(reference)
        with step(f"podman build {reference} from {spec.dockerfile} --target {spec.name}"):
            podman.run(*build_argv(settings.checkout, spec, reference, fingerprint), log=log)
        partial = dest / "image.tar.partial"
        partial.unlink(missing_ok=True)
        with step(f"export {reference} to a docker-archive"):
            podman.run(
                "save",
                "--format",
                "docker-archive",
                "--output",
                str(partial),
                reference,
                log=dest / "save.log",
            )
        partial.rename(archive)
        if previous and previous != podman.image_id(reference):
            # The superseded image (its layers stay while a newer image builds on them).
            podman.run("image", "rm", previous, check=False)
        (dest / ".complete").write_text(fingerprint)
        return archive


def ensure_images(settings: DevstackSettings) -> dict[str, Path]:
    """Both images built, tagged and exported: image reference -> docker-archive path.

    Idempotent: with the same base recipe, Dockerfile and sources, it builds nothing.
    """
    _require(["podman", "runc"])
    with Podman.for_settings(settings).in_use() as podman:
        podman.write_conf(*_hard_limits())
        base = ensure_base(settings, podman)
        version = project_version(settings.checkout)
        return {
            spec.reference(version): ensure_image(settings, podman, spec, base) for spec in IMAGES
        }


def main(argv: Sequence[str] | None = None) -> int:
    """Build what is missing; or ``podman ARGS...``: run podman on this stack's store."""
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ  # noqa: TID251 - the process edge
    settings = DevstackSettings.from_environ(environ)
    if args[:1] == ["podman"]:
        with Podman.for_settings(settings).in_use() as podman:
            podman.write_conf(*_hard_limits())
            return subprocess.run(podman.argv(*args[1:]), env=podman.env(environ)).returncode
    if args:
        print("usage: python -m clarion_devstack.images [podman ARGS...]", file=sys.stderr)
        return 2
    try:
        archives = ensure_images(settings)
    except StackError as exc:
        print(f"[clarion] error: {exc}", file=sys.stderr)
        return 1
    for reference, archive in archives.items():
        say(f"{reference} -> {archive}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
