"""The image build's pure parts: tags, build context, fingerprints, configuration."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import yaml

from clarion_devstack import images
from clarion_devstack.procs import StackError
from clarion_operator.core.crd import DEFAULT_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def test_tags_are_what_the_chart_and_the_operator_defaults_expect() -> None:
    version = images.project_version(ROOT)
    chart = yaml.safe_load((ROOT / "charts/clarion/Chart.yaml").read_text())
    values = yaml.safe_load((ROOT / "charts/clarion/values.yaml").read_text())
    assert images.WORKER.reference(version) == DEFAULT_IMAGE
    # The chart's operator image: its repository with an empty tag, meaning appVersion.
    assert values["image"]["tag"] == ""
    expected = f"{values['image']['repository']}:{chart['appVersion']}"
    assert images.OPERATOR.reference(version) == expected


def _stages(text: str) -> dict[str, str]:
    """The Dockerfile's stages by name: the text after ``FROM <image> AS <name>``."""
    stages: dict[str, str] = {}
    for chunk in text.split("\nFROM ")[1:]:
        head, _, body = chunk.partition("\n")
        stages[head.split(" AS ")[1]] = f"{head.split(' AS ')[0]}\n{body}"
    return stages


def _copy_sources(spec: images.ImageSpec) -> set[str]:
    """What the build of ``spec`` copies or mounts from the context, its COMPONENT set."""
    sources: set[str] = set()
    text = (ROOT / spec.dockerfile).read_text().replace("${COMPONENT}", spec.name)
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources.update(w.rstrip("/") for w in words[1:-1])
        sources.update(re.findall(r"--mount=type=bind,source=([^,\s]+)", line))
    return sources


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_the_fingerprinted_context_holds_everything_the_dockerfile_copies(
    spec: images.ImageSpec,
) -> None:
    copied = _copy_sources(spec)
    assert copied, "no COPY found: the parser is broken"
    assert copied == set(spec.context), copied ^ set(spec.context)
    assert set(spec.context) <= set(images.CONTEXT_PATHS)


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_each_image_copies_its_own_distribution_and_the_contract_only(
    spec: images.ImageSpec,
) -> None:
    """No image holds the development stack, nor the other product's code."""
    other = {"worker": "operator", "operator": "worker"}[spec.name]
    copied = _copy_sources(spec)
    assert {"contract", spec.name} <= copied
    assert not copied & {"devstack", other, "pyproject.toml"}
    lines = (ROOT / spec.dockerfile).read_text().splitlines()
    text = "\n".join(line for line in lines if not line.startswith("#")) + "\n"
    assert "--wheel-dir /wheels ./contract ./${COMPONENT}\n" in text
    # The dependencies come from the wheels' metadata, not from a list in the Dockerfile.
    assert "-r /tmp/requirements.txt" in text
    for name in ("aiokafka", "starlette", "kopf", "kubernetes", "pydantic", "uvicorn"):
        assert name not in text, f"{spec.dockerfile} names {name}"


def test_the_images_tag_is_the_version_every_product_distribution_carries(
    tmp_path: Path,
) -> None:
    for relative in images.RELEASE_PYPROJECTS:
        (tmp_path / relative).parent.mkdir(parents=True)
        shutil.copy(ROOT / relative, tmp_path / relative)
    assert images.project_version(tmp_path) == images.project_version(ROOT)
    worker = tmp_path / "worker/pyproject.toml"
    worker.write_text(worker.read_text().replace('version = "', 'version = "9', 1))
    with pytest.raises(StackError, match="disagree on the version"):
        images.project_version(tmp_path)


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_dependencies_install_in_a_layer_before_the_code(spec: images.ImageSpec) -> None:
    """A code change must not reinstall the dependencies: they come first in the final stage."""
    final = _stages((ROOT / spec.dockerfile).read_text())["runtime"]
    deps = final.index("pip install -c /tmp/constraints.txt -r /tmp/requirements.txt")
    wheel = final.index("--no-deps /tmp/wheels/*.whl")
    assert deps < wheel
    # Before the dependencies, only the requirements the wheels declare are copied in (a
    # layer that stays cached while they do not change); the wheels come after.
    copies = [line for line in final.splitlines() if line.startswith("COPY")]
    assert copies == [
        "COPY --from=build /deps/requirements.txt /tmp/requirements.txt",
        "COPY --from=build /wheels /tmp/wheels",
    ]
    assert final.index(copies[0]) < deps < final.index(copies[1])
    assert final.splitlines()[0] == images.BASE_IMAGE


def test_context_files_skip_caches_and_follow_the_sources(tmp_path: Path) -> None:
    for entry in (*images.CONTEXT_PATHS, ".dockerignore"):
        if "." in entry:
            shutil.copy(ROOT / entry, tmp_path / entry)
    (tmp_path / "devstack/go/kube").mkdir(parents=True)
    (tmp_path / "devstack/go/kube/go.mod").write_text("module x\n")
    (tmp_path / "worker/clarion_worker/__pycache__").mkdir(parents=True)
    (tmp_path / "worker/clarion_worker/app.py").write_text("x = 1\n")
    (tmp_path / "worker/clarion_worker/__pycache__/app.cpython-311.pyc").write_bytes(b"\0")
    (tmp_path / "worker/clarion_worker/stale.pyc").write_bytes(b"\0")
    (tmp_path / "Dockerfile").write_text((ROOT / "Dockerfile").read_text())
    (tmp_path / "operator").mkdir()
    names = [str(p.relative_to(tmp_path)) for p in images.context_files(tmp_path)]
    assert "worker/clarion_worker/app.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert "devstack/go/kube/go.mod" not in names  # in no image's context

    before = images.image_fingerprint(tmp_path, images.WORKER, "base")
    # A compiled file appearing does not count; a source change does, and so does the base.
    (tmp_path / "worker/clarion_worker/other.pyc").write_bytes(b"\1")
    assert images.image_fingerprint(tmp_path, images.WORKER, "base") == before
    (tmp_path / "worker/clarion_worker/app.py").write_text("x = 2\n")
    after = images.image_fingerprint(tmp_path, images.WORKER, "base")
    assert after != before
    assert images.image_fingerprint(tmp_path, images.WORKER, "other base") != after
    # The operator's code and the development stack are not the worker image's context.
    (tmp_path / "operator/clarion_operator").mkdir()
    (tmp_path / "operator/clarion_operator/handlers.py").write_text("x = 1\n")
    (tmp_path / "devstack/clarion_devstack").mkdir(parents=True)
    (tmp_path / "devstack/clarion_devstack/images.py").write_text("x = 1\n")
    assert images.image_fingerprint(tmp_path, images.WORKER, "base") == after
    operator = images.image_fingerprint(tmp_path, images.OPERATOR, "base")
    (tmp_path / "operator/clarion_operator/handlers.py").write_text("x = 2\n")
    assert images.image_fingerprint(tmp_path, images.OPERATOR, "base") != operator
    assert images.image_fingerprint(tmp_path, images.WORKER, "base") == after


def test_dockerignore_patterns_as_the_builders_read_them() -> None:
    patterns = images.dockerignore(ROOT)
    assert images.ignored("worker/clarion_worker/__pycache__/app.cpython-311.pyc", patterns)
    assert images.ignored("operator/x.pyc", patterns)
    assert images.ignored("devstack/go/kube/go.sum", patterns)
    assert images.ignored(".clarion/env.json", patterns)
    # The development stack is in no image, nor are the other clients.
    assert images.ignored("devstack/clarion_devstack/images.py", patterns)
    assert images.ignored("clients/typescript/package.json", patterns)
    assert not images.ignored("worker/clarion_worker/app.py", patterns)
    assert not images.ignored("operator/pyproject.toml", patterns)
    assert not images.ignored("contract/clarion_contract/__init__.py", patterns)
    with pytest.raises(images.StackError, match="not supported"):
        images.ignored("a", ["!a"])


def test_containers_conf_keeps_the_limits_at_or_below_the_hard_ones() -> None:
    conf = images.containers_conf(hard_nofile=20000, hard_nproc=96365, runtime=Path("/c/runc"))
    assert 'default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]' in conf
    low = images.containers_conf(hard_nofile=4096, hard_nproc=512, runtime=Path("/c/runc"))
    assert '"nofile=4096:4096", "nproc=512:512"' in low
    assert 'runtime = "clarion-runc"' in conf
    assert 'clarion-runc = ["/c/runc"]' in conf
    assert 'cgroup_manager = "cgroupfs"' in conf


def test_podman_runs_without_a_network_unless_asked() -> None:
    """podman's default bridge would leave cni-podman0 and CNI chains on the host."""
    conf = images.containers_conf(hard_nofile=20000, hard_nproc=96365, runtime=Path("/c/runc"))
    section = conf.split("[containers]", 1)[1].split("[engine]", 1)[0]
    assert 'netns = "none"' in section


def test_the_build_uses_no_registry_and_mounts_the_ca_bundle_read_only() -> None:
    argv = images.build_argv(ROOT, images.WORKER, "ghcr.io/clarion/worker:9", "fp")
    assert "--pull=never" in argv
    assert "--volume=/etc/ssl/certs:/etc/ssl/certs:ro" in argv
    assert "--network=host" in argv  # no bridge, no firewall rule for a build
    assert argv[-1] == str(ROOT)
    assert argv[argv.index("--tag") + 1] == "ghcr.io/clarion/worker:9"
    # One Dockerfile: the target and the distribution it installs are the image's name.
    assert argv[argv.index("--file") + 1] == str(ROOT / "Dockerfile")
    assert argv[argv.index("--target") + 1] == "worker"
    assert "--build-arg=COMPONENT=worker" in argv


@pytest.mark.parametrize("spec", images.IMAGES, ids=lambda s: s.name)
def test_each_target_runs_its_own_command_on_the_shared_runtime(
    spec: images.ImageSpec,
) -> None:
    """The targets differ only in their command and ports; they check what COMPONENT built."""
    stages = _stages((ROOT / spec.dockerfile).read_text())
    target = stages[spec.name]
    assert target.splitlines()[0] == "runtime"
    assert f'ENTRYPOINT ["clarion-{spec.name}"]' in target
    assert f"command -v clarion-{spec.name} " in target
    assert f"--build-arg COMPONENT={spec.name}" in target
    # The build stage refuses a COMPONENT that names no image.
    assert "worker|operator)" in stages["build"]
    assert set(stages) == {"build", "runtime", *(s.name for s in images.IMAGES)}


def test_podman_is_confined_to_the_cache(tmp_path: Path) -> None:
    from clarion_devstack.settings import DevstackSettings

    settings = DevstackSettings.from_environ({"CLARION_CACHE_DIR": str(tmp_path)}, checkout=ROOT)
    podman = images.Podman.for_settings(settings)
    argv = podman.argv("images")
    assert argv[argv.index("--root") + 1] == str(tmp_path / "podman/storage")
    assert argv[argv.index("--runtime") + 1] == str(podman.runc)
    # No bind mount of the store onto itself left on the host.
    assert argv[argv.index("--storage-opt") + 1] == "overlay.skip_mount_home=true"
    assert podman.env({"PATH": "/bin"}) == {
        "PATH": "/bin",
        "CONTAINERS_CONF": str(tmp_path / "podman/containers.conf"),
    }
    # Nothing of podman's in /run but the store's own run state, which in_use removes.
    assert argv[argv.index("--runroot") + 1] == str(podman.runroot)
    assert argv[argv.index("--tmpdir") + 1] == str(podman.runroot / "libpod")
    podman.write_conf(hard_nofile=4096, hard_nproc=512)
    runc = podman.runc.read_text()
    assert runc.startswith("#!/bin/sh\nexec ")
    assert f'--root "{podman.runroot / "runc"}"' in runc
    assert os.access(podman.runc, os.X_OK)
    other = images.Podman.for_settings(
        DevstackSettings.from_environ({"CLARION_CACHE_DIR": str(tmp_path / "b")}, checkout=ROOT)
    )
    assert other.runroot != podman.runroot


def test_the_last_user_of_the_store_removes_its_run_state(tmp_path: Path) -> None:
    run = tmp_path / "run"
    podman = images.Podman(
        store=tmp_path / "containers/storage",
        runroot=run / "clarion-containers/abc",
        conf=tmp_path / "containers/containers.conf",
        network_run_dir=run / "containers/networks",
    )
    other_store = run / "clarion-containers/def"
    with podman.in_use():
        podman.runroot.mkdir(parents=True)  # what podman makes on its first call
        podman.network_run_dir.mkdir(parents=True)
        with podman.in_use():
            pass
        assert podman.runroot.is_dir()  # the outer user is still at work
        other_store.mkdir()
    assert not podman.runroot.exists()
    assert not (run / "containers").exists()  # netavark's, empty: made by our podman
    assert other_store.is_dir()  # another store's run state is not ours to remove
    other_store.rmdir()
    with podman.in_use():
        podman.runroot.mkdir(parents=True)
        (podman.network_run_dir / "netavark.lock").parent.mkdir(parents=True)
        (podman.network_run_dir / "netavark.lock").touch()  # another podman's bridge
    assert not podman.runroot.parent.exists()  # the last one out removes the parent too
    assert (podman.network_run_dir / "netavark.lock").exists()


def test_debian_mirror_from_deb822_sources(tmp_path: Path) -> None:
    sources = tmp_path / "debian.sources"
    sources.write_text(
        "Types: deb\n"
        "# a comment: with a colon\n"
        "URIs: http://mirror.invalid/debian\n"
        "Suites: bookworm bookworm-updates\n"
        "Components: main\n"
        "\n"
        "Types: deb\n"
        "URIs: http://mirror.invalid/debian-security\n"
        "Suites: bookworm-security\n"
    )
    assert images.debian_mirror([tmp_path / "absent.list", sources]) == (
        "http://mirror.invalid/debian"
    )


def test_debian_mirror_from_a_one_line_list(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text(
        "deb http://mirror.invalid/debian-security bookworm-security main\n"
        "deb [arch=amd64] http://mirror.invalid/debian bookworm main\n"
    )
    assert images.debian_mirror([listing]) == "http://mirror.invalid/debian"


def test_no_debian_source_is_a_clear_error(tmp_path: Path) -> None:
    listing = tmp_path / "sources.list"
    listing.write_text("deb http://mirror.invalid/ubuntu jammy main\n")
    with pytest.raises(images.StackError, match="no Debian bookworm source"):
        images.debian_mirror([listing])


def test_the_base_fingerprint_follows_its_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    before = images.base_fingerprint()
    monkeypatch.setattr(images, "BASE_PACKAGES", (*images.BASE_PACKAGES, "curl"))
    assert images.base_fingerprint() != before
