"""Fetch and build the stack's components into the cache, once per pinned version.

Each component lands in ``<cache>/<name>-<version>/`` and is marked complete with a
fingerprint of its recipe (go.mod, go.sum, pom, flags). A later run that finds the
same fingerprint does nothing; a changed recipe rebuilds. A file lock serialises
concurrent runs (a developer's shell and CI on the same machine).
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import versions
from .procs import StackError, tail
from .progress import step
from .settings import DevstackSettings


@dataclass(frozen=True)
class GoBuild:
    """Binaries built from one wrapper module under ``devstack/go``."""

    name: str
    version: str
    module: str
    packages: tuple[str, ...]
    ldflags: str = "-s -w"

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(pkg.rsplit("/", 1)[1] for pkg in self.packages)


def _kube_ldflags() -> str:
    major, minor, _ = versions.KUBERNETES.split(".")
    flags = ["-s", "-w"]
    # Without these stamps the binaries report v0.0.0-master.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion=v{versions.KUBERNETES}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


KUBE = GoBuild(
    name="kube",
    version=versions.KUBERNETES,
    module="devstack/go/kube",
    packages=(
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
        "k8s.io/kubernetes/cmd/kubectl",
        # The real node's agents, from the same pinned module as the control plane.
        "k8s.io/kubernetes/cmd/kubelet",
        "k8s.io/kubernetes/cmd/kube-proxy",
    ),
    ldflags=_kube_ldflags(),
)
ETCD = GoBuild(name="etcd", version=versions.ETCD, module="devstack/go/etcd", packages=("./etcd",))
KWOK = GoBuild(
    name="kwok",
    version=versions.KWOK,
    module="devstack/go/kwok",
    packages=("sigs.k8s.io/kwok/cmd/kwok",),
)


def _helm_ldflags() -> str:
    # What Helm's own release build stamps: its version, and the Kubernetes version its
    # client-go speaks (1.MINOR for client-go v0.MINOR) as the default for lint and template.
    minor = versions.HELM_CLIENT_GO.split(".")[1]
    flags = [
        "-s",
        "-w",
        f"-X helm.sh/helm/v3/internal/version.version=v{versions.HELM}",
        "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
    ]
    for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        flags += [f"-X {pkg}.k8sVersionMajor=1", f"-X {pkg}.k8sVersionMinor={minor}"]
    return " ".join(flags)


#: Helm renders, lints, installs and tests charts/clarion against the local control plane.
HELM = GoBuild(
    name="helm",
    version=versions.HELM,
    module="devstack/go/helm",
    packages=("helm.sh/helm/v3/cmd/helm",),
    ldflags=_helm_ldflags(),
)
#: crictl stops and removes the real node's pods through the CRI at env-down (so the CNI
#: plugins release their addresses), and shows its containers to developers.
CRI_TOOLS = GoBuild(
    name="cri-tools",
    version=versions.CRI_TOOLS,
    module="devstack/go/critools",
    packages=("sigs.k8s.io/cri-tools/cmd/crictl",),
    ldflags=f"-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version={versions.CRI_TOOLS}",
)
#: Traefik serves the channels' Ingress and HTTPRoute in front of the real node's pods.
TRAEFIK = GoBuild(
    name="traefik",
    version=versions.TRAEFIK,
    module="devstack/go/traefik",
    packages=("github.com/traefik/traefik/v3/cmd/traefik",),
    ldflags=f"-s -w -X github.com/traefik/traefik/v3/pkg/version.Version={versions.TRAEFIK}",
)


#: promtool checks and unit-tests the chart's alerting rules (tests/charts).
def _promtool_ldflags() -> str:
    # Prometheus's release build stamps prometheus/common's version package; without it
    # `promtool --version` prints an empty version. Module v0.3MM.P is Prometheus 3.MM.P.
    _, minor, patch = versions.PROMETHEUS_MODULE.split(".")
    release = f"3.{int(minor) - 300}.{patch}"
    return f"-s -w -X github.com/prometheus/common/version.Version={release}"


PROMTOOL = GoBuild(
    name="promtool",
    version=versions.PROMETHEUS_MODULE,
    module="devstack/go/promtool",
    packages=("github.com/prometheus/prometheus/cmd/promtool",),
    ldflags=_promtool_ldflags(),
)
#: Built by ``make setup`` with visible progress: Traefik and promtool are only used by
#: tests, but a first build inside a test run (10 minutes and more, cold) would look hung.
GO_BUILDS = (ETCD, KUBE, KWOK, HELM, CRI_TOOLS, TRAEFIK, PROMTOOL)


@dataclass(frozen=True)
class Toolchain:
    """Where the installed components live."""

    kafka_libs: Path
    bin: dict[str, Path]

    def binary(self, name: str) -> Path:
        return self.bin[name]


def ensure_all(settings: DevstackSettings) -> Toolchain:
    binaries: dict[str, Path] = {}
    for build in GO_BUILDS:
        bindir = ensure_go(settings, build)
        binaries.update({name: bindir / name for name in build.binaries})
    return Toolchain(kafka_libs=ensure_kafka(settings), bin=binaries)


def _fingerprint(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f"{target.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _complete(dest: Path, fingerprint: str) -> bool:
    marker = dest / ".complete"
    return marker.is_file() and marker.read_text() == fingerprint


def _run(argv: Sequence[str], log: Path, cwd: Path | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        result = subprocess.run(list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise StackError(
            f"{' '.join(argv[:3])} ... failed with exit code {result.returncode}\n"
            f"--- last lines of {log} ---\n{tail(log, 40)}"
        )


def ensure_go(settings: DevstackSettings, build: GoBuild) -> Path:
    """Build ``build``'s binaries unless the cache already holds them; return their folder."""
    module = settings.checkout / build.module
    fingerprint = _fingerprint(
        (module / "go.mod").read_bytes(),
        (module / "go.sum").read_bytes(),
        build.ldflags.encode(),
        " ".join(build.packages).encode(),
    )
    dest = settings.cache_dir / f"{build.name}-v{build.version}"
    with _locked(dest):
        if _complete(dest, fingerprint):
            return dest / "bin"
        staging = dest / "bin.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        with step(f"build {build.name} v{build.version} from the Go module proxy"):
            _run(
                [
                    settings.go,
                    "build",
                    "-ldflags",
                    build.ldflags,
                    "-o",
                    f"{staging}/",
                    *build.packages,
                ],
                log=dest / "build.log",
                cwd=module,
            )
        shutil.rmtree(dest / "bin", ignore_errors=True)
        staging.rename(dest / "bin")
        (dest / ".complete").write_text(fingerprint)
        return dest / "bin"


def ensure_kafka(settings: DevstackSettings) -> Path:
    """Resolve Kafka's broker jars from Maven Central unless cached; return the jar folder."""
    pom = settings.checkout / "devstack/kafka/pom.xml"
    fingerprint = _fingerprint(pom.read_bytes(), versions.KAFKA.encode())
    dest = settings.cache_dir / f"kafka-{versions.KAFKA}"
    with _locked(dest):
        if _complete(dest, fingerprint):
            return dest / "libs"
        staging = dest / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        with step(f"fetch Apache Kafka {versions.KAFKA} jars from Maven Central"):
            _run(
                [
                    settings.mvn,
                    "-B",
                    "-ntp",
                    "-f",
                    str(pom),
                    f"-Dkafka.version={versions.KAFKA}",
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staging}",
                ],
                log=dest / "fetch.log",
            )
        shutil.rmtree(dest / "libs", ignore_errors=True)
        staging.rename(dest / "libs")
        (dest / ".complete").write_text(fingerprint)
        return dest / "libs"
