"""The worker and operator images, built by ``make images``, checked from outside.

Builds (or reuses) both images with :func:`clarion_devstack.images.ensure_images`, then
runs them with podman: as 65532, with the packages constraints.txt pins, and the worker
serving the local stack's real Kafka from a read-only root filesystem with only the
mounts the operator renders (the config read-only, /tmp writable). Needs root and the
Debian packages of ``make sysdeps`` (podman, runc, debootstrap).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from clarion_devstack import images
from clarion_devstack.settings import DevstackSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> DevstackSettings:
    """The shared caches, and a snapshot of the build context as the checkout.

    Other work may edit the sources while this module runs; the snapshot keeps what is
    built, and what "nothing changed" means, fixed.
    """
    snapshot = tmp_path_factory.mktemp("context")
    for entry in (*images.CONTEXT_PATHS, images.DOCKERFILE, ".dockerignore"):
        source = ROOT / entry
        if source.is_dir():
            shutil.copytree(source, snapshot / entry, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, snapshot / entry)
    shared = DevstackSettings.from_environ(os.environ)  # noqa: TID251 - the test's edge
    # A cache (and podman store) of this module's own, kept between runs: other builds
    # from other trees into the shared cache cannot change what these tests look at.
    # The base's tarball is reused from the shared cache when it is there.
    private = shared.cache_dir / "tests-images"
    source, target = images.base_dir(shared.cache_dir), images.base_dir(private)
    marker = source / ".complete"
    if marker.is_file() and not (target / ".complete").is_file():
        target.mkdir(parents=True, exist_ok=True)
        (target / "rootfs.tar").unlink(missing_ok=True)
        os.link(source / "rootfs.tar", target / "rootfs.tar")
        shutil.copy(marker, target / ".complete")
    return dataclasses.replace(shared, checkout=snapshot, cache_dir=private)


@pytest.fixture(scope="module")
def podman(settings: DevstackSettings) -> Iterator[images.Podman]:
    with images.Podman.for_settings(settings).in_use() as podman:
        yield podman


@pytest.fixture(scope="module")
def built(settings: DevstackSettings) -> dict[str, Path]:
    return images.ensure_images(settings)


@pytest.fixture(scope="module")
def version(settings: DevstackSettings) -> str:
    return images.project_version(settings.checkout)


def _manifest(archive: Path) -> tuple[list[str], dict[str, object]]:
    def member(tar: tarfile.TarFile, name: str) -> Any:
        extracted = tar.extractfile(name)
        assert extracted is not None, name
        return json.load(extracted)

    with tarfile.open(archive) as tar:
        manifest = member(tar, "manifest.json")
        config = member(tar, manifest[0]["Config"])
    return manifest[0]["RepoTags"], config["config"]


def test_both_images_are_exported_under_the_chart_s_tags(
    built: dict[str, Path], version: str
) -> None:
    assert set(built) == {spec.reference(version) for spec in images.IMAGES}
    for reference, archive in built.items():
        tags, config = _manifest(archive)
        assert tags == [reference]
        assert config["User"] == "65532:65532"
        labels = config["Labels"]
        assert isinstance(labels, dict)
        assert labels[images.FINGERPRINT_LABEL] == (archive.parent / ".complete").read_text()


def test_a_second_run_builds_nothing(
    built: dict[str, Path], settings: DevstackSettings, podman: images.Podman
) -> None:
    before = {archive: archive.stat().st_mtime_ns for archive in built.values()}
    image_ids = {
        ref: podman.run("image", "inspect", "--format", "{{.Id}}", ref).stdout for ref in built
    }
    again = images.ensure_images(settings)
    assert again == built
    assert {archive: archive.stat().st_mtime_ns for archive in again.values()} == before
    assert {
        ref: podman.run("image", "inspect", "--format", "{{.Id}}", ref).stdout for ref in built
    } == image_ids


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_each_image_starts_as_65532_and_answers_help(
    spec: images.ImageSpec, built: dict[str, Path], podman: images.Podman, version: str
) -> None:
    reference = spec.reference(version)
    # As the chart and the operator run them: read-only root, /tmp writable.
    read_only = ("--read-only", "--read-only-tmpfs=false", "--tmpfs=/tmp")
    helped = podman.run("run", "--rm", "--network=none", *read_only, reference, "--help")
    assert helped.stdout.startswith(f"usage: clarion-{spec.name}"), helped.stdout
    ids = podman.run(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint=python",
        reference,
        "-c",
        "import os, sys; print(os.getuid(), os.getgid(), sys.version_info[:2])",
    )
    assert ids.stdout.strip() == "65532 65532 (3, 11)"


def _constraints() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, pinned = line.split("==", 1)
            pins[_canonical(name)] = pinned.strip()
    return pins


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed(podman: images.Podman, reference: str) -> dict[str, str]:
    listed = podman.run(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint=pip",
        reference,
        "list",
        "--format=json",
    )
    return {_canonical(p["name"]): p["version"] for p in json.loads(listed.stdout)}


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_installed_packages_are_the_pinned_ones(
    spec: images.ImageSpec, built: dict[str, Path], podman: images.Podman, version: str
) -> None:
    installed = _installed(podman, spec.reference(version))
    # What the base brings (Debian's pip, setuptools, wheel) is the base's, not ours.
    from_base = _installed(podman, images.BASE_REFERENCE)
    own = {"clarion-contract", f"clarion-{spec.name}"}
    assert {n: v for n, v in installed.items() if n.startswith("clarion")} == dict.fromkeys(
        own, version
    )
    ours = {n: v for n, v in installed.items() if n not in from_base and n not in own}
    assert ours, "no dependency installed"
    pins = _constraints()
    unpinned = sorted(set(ours) - set(pins))
    assert not unpinned, f"installed but not pinned in constraints.txt: {unpinned}"
    differ = {n: (v, pins[n]) for n, v in ours.items() if pins[n] != v}
    assert not differ, f"installed version != constraints.txt: {differ}"


#: What each image must not hold: the other part of the product and the development stack.
FOREIGN = {
    "worker": (
        {"kopf", "kubernetes", "pytest", "cogapp"},
        ("clarion_operator", "clarion_devstack", "kopf"),
    ),
    "operator": (
        {"starlette", "uvicorn", "pytest", "cogapp"},
        ("clarion_worker", "clarion_devstack", "starlette"),
    ),
}


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_each_image_holds_neither_the_other_part_nor_the_development_stack(
    spec: images.ImageSpec, built: dict[str, Path], podman: images.Podman, version: str
) -> None:
    reference = spec.reference(version)
    packages, modules = FOREIGN[spec.name]
    assert not set(_installed(podman, reference)) & packages
    probe = (
        "import importlib.util as u, sys; "
        "found = [m for m in sys.argv[1:] if u.find_spec(m)]; "
        f"import clarion_contract, clarion_{spec.name}; print(found)"
    )
    found = podman.run(
        "run", "--rm", "--network=none", "--entrypoint=python", reference, "-c", probe, *modules
    )
    assert found.stdout.strip() == "[]"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()


@pytest.fixture
def worker_config(tmp_path: Path, kafka_bootstrap: str) -> Path:
    topic = f"images-{uuid.uuid4().hex[:8]}"
    asyncio.run(_create_topic(kafka_bootstrap, topic))
    folder = tmp_path / "config"
    folder.mkdir()
    folder.chmod(0o755)  # the container runs as 65532
    (folder / "worker.json").write_text(
        json.dumps(
            {
                "apiVersion": "clarion.dev/worker-config/v1",
                "channel": "images",
                "kafka": {"bootstrapServers": kafka_bootstrap},
                "topics": [{"name": topic, "audience": "broadcast"}],
                "auth": {"mode": "none"},
                "drain": {"windowSeconds": 1},
            }
        )
    )
    return folder


def test_the_worker_serves_kafka_from_a_read_only_root(
    built: dict[str, Path], podman: images.Podman, version: str, worker_config: Path
) -> None:
    """The pod's shape, in podman: read-only root, config mounted read-only, /tmp writable."""
    port = _free_port()
    name = f"clarion-images-{uuid.uuid4().hex[:8]}"
    argv = podman.argv(
        "run",
        "--rm",
        f"--name={name}",
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs=/tmp:size=64m",
        f"--volume={worker_config}:/etc/clarion:ro",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        # Host networking: the worker reaches the stack's Kafka and listens on 127.0.0.1.
        "--network=host",
        images.WORKER.reference(version),
        "--config=/etc/clarion/worker.json",
        "--host=127.0.0.1",
        f"--port={port}",
    )
    env = podman.env(os.environ)  # noqa: TID251 - child env
    log = worker_config.parent / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        status = None
        while status != 200:
            assert proc.poll() is None, f"worker exited: {log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"not ready in 90 s: {log.read_text()[-3000:]}"
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code
            except httpx.TransportError:
                status = None
            if status != 200:
                time.sleep(0.2)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
        assert metrics.status_code == 200
        podman.run("stop", "--time=20", name)
        # SIGTERM honoured: the worker drained and exited by itself, not killed (137).
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            podman.run("kill", name, check=False)
            proc.wait(timeout=30)


def test_nothing_stays_mounted_under_the_cache(
    built: dict[str, Path], podman: images.Podman, version: str, settings: DevstackSettings
) -> None:
    """Builds and runs leave no mount behind on the host (the store's own included)."""
    podman.run("run", "--rm", "--network=none", images.WORKER.reference(version), "--help")
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    left = [line for line in mounts if f" {settings.cache_dir}/" in line]
    assert not left, left
