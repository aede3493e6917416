"""The chart against the real API server (kube-apiserver 1.34, controller-manager,
scheduler, KWOK) and Kafka: every rendered object and example accepted by a server-side
dry run, a real ``helm install`` whose operator Pod becomes Ready, and RBAC proven by
running the operator with the chart's own ServiceAccount token.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from clarion_devstack.charts import Helm
from clarion_devstack.crds import crd_document, wait_established
from clarion_devstack.procs import free_port, stop_popen
from clarion_devstack.pytest_plugin import LocalStack
from clarion_operator.core import crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "clarion"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))


def ci_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


pytestmark = pytest.mark.integration

WAIT = "60s"
MANAGER = "clarion-chart-tests"
#: Stand-ins for prometheus-operator's CRDs, so the monitoring scenario's objects can be
#: dry-run; no schema (the server only checks they are well-formed objects of the kind).
STUB_CRDS = {"servicemonitors": "ServiceMonitor", "prometheusrules": "PrometheusRule"}
CI_NAMESPACES = ("clarion-ci-a", "clarion-ci-b")


def _stub_crd(plural: str, kind: str) -> str:
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return yaml.safe_dump(crd_document("monitoring.coreos.com", kind, plural, schema))


@pytest.fixture(scope="module")
def cluster(local_stack: LocalStack) -> Iterator[LocalStack]:
    """The chart's CRD applied for real; the CI scenarios' namespaces; the stub CRDs."""
    stack = local_stack
    stack.kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        f"--field-manager={MANAGER}",
        "-f",
        str(CHART / "crds" / "realtimechannels.yaml"),
    )
    wait_established(stack.kubectl, [crd.CRD_NAME])
    stubs = [f"{plural}.monitoring.coreos.com" for plural in STUB_CRDS]
    present = stack.kubectl("get", "crd", "-o", "name").split()
    created = [
        name
        for name in stubs
        if f"customresourcedefinition.apiextensions.k8s.io/{name}" not in present
    ]
    for plural, kind in STUB_CRDS.items():
        if f"{plural}.monitoring.coreos.com" in created:
            stack.kubectl("create", "-f", "-", stdin=_stub_crd(plural, kind))
    if created:
        wait_established(stack.kubectl, created)
    namespaces = [*CI_NAMESPACES, "clarion-system"]
    made = [
        ns
        for ns in namespaces
        if not stack.kubectl("get", "ns", ns, check=False).strip().startswith("NAME")
    ]
    for ns in made:
        stack.kubectl("create", "namespace", ns)
    try:
        yield stack
    finally:
        for ns in made:
            stack.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for name in created:
            stack.kubectl("delete", "crd", name, "--timeout=60s", check=False)


def _dry_run(stack: LocalStack, manifest: str, *args: str) -> str:
    return stack.kubectl(
        "apply",
        "--dry-run=server",
        "--server-side",
        f"--field-manager={MANAGER}",
        *args,
        "-f",
        "-",
        stdin=manifest,
    )


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=["defaults", *map(ci_id, CI_VALUES)])
def test_every_rendered_object_is_accepted_by_the_api_server(
    helm: Helm, cluster: LocalStack, namespace: str, values: Path | None
) -> None:
    manifest = helm.template(namespace=namespace, values=[] if values is None else [values])
    docs = [d for d in yaml.safe_load_all(manifest) if d]
    # Admission checks the test hook's ServiceAccount exists: create it for real first.
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(accounts))
    out = _dry_run(cluster, manifest)
    assert out.count("(server dry run)") == len(docs), out


def test_install_yaml_and_examples_are_accepted_by_the_api_server(
    cluster: LocalStack, namespace: str
) -> None:
    rendered = cluster.kubectl("kustomize", str(ROOT / "manifests"))
    out = _dry_run(cluster, rendered)
    assert "deployment.apps/clarion serverside-applied (server dry run)" in out
    examples = cluster.kubectl("kustomize", str(ROOT / "manifests" / "examples"))
    out = _dry_run(cluster, examples, "-n", namespace)
    assert "realtimechannel.realtime.clarion.dev/hello serverside-applied" in out
    assert "realtimechannel.realtime.clarion.dev/unionflow-dashboard serverside-applied" in out


def test_the_examples_fail_validation_when_broken(cluster: LocalStack, namespace: str) -> None:
    """The dry run above means something: the server does validate against the CRD."""
    channel = yaml.safe_load((ROOT / "manifests/examples/unionflow-dashboard.yaml").read_text())
    channel["spec"]["topics"][0]["audience"] = "everyone"
    result = cluster.kubectl(
        "apply",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        stdin=yaml.safe_dump(channel),
        check=False,
    )
    assert "Unsupported value" in result
    assert "everyone" in result


# --- helm install, and the operator running with the chart's ServiceAccount --------------


def _helm_env(stack: LocalStack, helm: Helm, *args: str) -> str:
    return helm.run(f"--kubeconfig={stack.kubeconfig}", *args).stdout


@pytest.fixture
def release(helm: Helm, cluster: LocalStack, namespace: str) -> Iterator[str]:
    """`helm install --wait` into a fresh namespace: the operator Pod Ready through KWOK."""
    name = f"clarion-{uuid.uuid4().hex[:6]}"
    out = _helm_env(
        cluster,
        helm,
        "install",
        name,
        str(CHART),
        f"--namespace={namespace}",
        "--wait",
        "--timeout=90s",
    )
    assert "STATUS: deployed" in out
    try:
        yield name
    finally:
        _helm_env(cluster, helm, "uninstall", name, f"--namespace={namespace}", "--wait")


def test_helm_install_makes_the_operator_pod_ready(
    cluster: LocalStack, namespace: str, release: str
) -> None:
    out = cluster.kubectl(
        "wait",
        "pod",
        "-n",
        namespace,
        f"-l=app.kubernetes.io/instance={release}",
        "--for=condition=Ready",
        f"--timeout={WAIT}",
    )
    assert "condition met" in out
    pod = yaml.safe_load(
        cluster.kubectl(
            "get", "pod", "-n", namespace, f"-l=app.kubernetes.io/instance={release}", "-o", "yaml"
        )
    )["items"][0]
    assert pod["spec"]["serviceAccountName"] == release
    assert pod["spec"]["nodeName"] == "kwok-node-0"
    notes = cluster.kubectl("get", "secret", "-n", namespace, "-o", "name")
    assert f"sh.helm.release.v1.{release}.v1" in notes


def _token_kubeconfig(stack: LocalStack, token: str, path: Path) -> Path:
    admin = yaml.safe_load(stack.kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "local", "cluster": cluster}],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": "local", "user": "operator"}}
                ],
                "current-context": "operator",
            }
        )
    )
    return path


def _can_i(stack: LocalStack, kubeconfig: Path, *args: str) -> str:
    result = subprocess.run(
        [stack.env["kubectl"], f"--kubeconfig={kubeconfig}", "auth", "can-i", *args],
        capture_output=True,
        text=True,
    )
    return result.stdout.strip()


def _get_as(kubeconfig: Path, path: str) -> int:
    """Status of a GET with the kubeconfig's bearer token (403 is the point)."""
    config: dict[str, Any] = yaml.safe_load(kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    token = config["users"][0]["user"]["token"]
    ca = base64.b64decode(cluster["certificate-authority-data"])
    import ssl

    context = ssl.create_default_context(cadata=ca.decode())
    request = urllib.request.Request(
        f"{cluster['server']}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_operator_with_the_charts_service_account_reconciles_and_nothing_more(
    cluster: LocalStack,
    namespace: str,
    release: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    token = cluster.kubectl("create", "token", release, "-n", namespace, "--duration=10m").strip()
    kubeconfig = _token_kubeconfig(cluster, token, tmp_path / "operator.kubeconfig")

    # Refused: what the Role does not grant, and anything outside the watched namespace.
    assert (
        _can_i(
            cluster, kubeconfig, "patch", "realtimechannels.realtime.clarion.dev", "-n", namespace
        )
        == "yes"
    )
    assert _can_i(cluster, kubeconfig, "create", "deployments.apps", "-n", namespace) == "yes"
    # Secrets: read and watched (a changed one reconciles its channels) where watched only.
    assert _can_i(cluster, kubeconfig, "watch", "secrets", "-n", namespace) == "yes"
    assert _can_i(cluster, kubeconfig, "list", "secrets", "-n", "default") == "no"
    assert _can_i(cluster, kubeconfig, "create", "pods", "-n", namespace) == "no"
    assert _can_i(cluster, kubeconfig, "get", "configmaps", "-n", "default") == "no"
    assert (
        _can_i(cluster, kubeconfig, "list", "realtimechannels.realtime.clarion.dev", "-A") == "no"
    )
    assert _get_as(kubeconfig, "/api/v1/namespaces/kube-system/secrets") == 403
    assert _get_as(kubeconfig, "/api/v1/namespaces/kube-system/secrets/anything") == 403
    assert _get_as(kubeconfig, "/apis/apps/v1/namespaces/default/deployments") == 403

    metrics_port, liveness_port = free_port(), free_port()
    log = cluster.logs_dir / f"operator-chart-{namespace}.log"
    argv = [
        sys.executable,
        "-m",
        "clarion_operator",
        "--standalone",
        f"--namespace={namespace}",
        f"--kubeconfig={kubeconfig}",
        f"--metrics-port={metrics_port}",
        f"--liveness-port={liveness_port}",
        "--kafka-request-timeout-ms=3000",
        "--log-format=plain",
    ]
    topic = f"chart-{uuid.uuid4().hex[:8]}"
    channel = {
        "apiVersion": crd.API_VERSION,
        "kind": crd.KIND,
        "metadata": {"name": "rbac", "namespace": namespace},
        "spec": {
            "kafka": {"bootstrapServers": kafka_bootstrap},
            "topics": [{"name": topic, "partitions": 2, "deletionPolicy": "Delete"}],
            "auth": {"mode": "none"},
            "workers": {"replicas": 1},
        },
    }
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # noqa: TID251
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(channel))
        ready = cluster.kubectl(
            "wait", "rtc/rbac", "-n", namespace, "--for=condition=Ready", f"--timeout={WAIT}",
            check=False,
        )  # fmt: skip
        assert "condition met" in ready, f"{ready}\noperator log: {log}\n{log.read_text()[-3000:]}"
        status = yaml.safe_load(cluster.kubectl("get", "rtc/rbac", "-n", namespace, "-o", "yaml"))[
            "status"
        ]
        assert status["topics"][0]["state"] == "Ready"
        assert status["workers"]["ready"] == 1
        children = cluster.kubectl("get", "deploy,svc,cm,pdb", "-n", namespace, "-o", "name")
        assert "deployment.apps/rbac-worker" in children

        # The chart's helm test script, run against this operator and the real API server.
        ca = tmp_path / "ca.crt"
        server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
        ca.write_bytes(base64.b64decode(server["certificate-authority-data"]))
        (tmp_path / "token").write_text(token)
        check = subprocess.run(
            [sys.executable, str(CHART / "files" / "helm_test.py")],
            capture_output=True,
            text=True,
            env={
                **env,
                "CLARION_TEST_API": server["server"],
                "CLARION_TEST_TOKEN_FILE": str(tmp_path / "token"),
                "CLARION_TEST_CA_FILE": str(ca),
                "CLARION_TEST_HEALTHZ_URL": f"http://127.0.0.1:{liveness_port}/healthz",
            },
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "serves realtimechannels" in check.stdout

        # Deletion through the finalizer works with the same permissions.
        cluster.kubectl("delete", "rtc/rbac", "-n", namespace, "--timeout=60s")
        text = log.read_text()
        assert "Forbidden" not in text.replace("Not enough permissions", ""), log
    finally:
        stop_popen(proc, grace=15)
        cluster.kubectl(
            "patch",
            "rtc/rbac",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


def test_cluster_wide_rbac_grants_every_namespace_and_still_no_more(
    helm: Helm, cluster: LocalStack, namespace: str, tmp_path: Path
) -> None:
    """The ClusterRole scenario, applied for real: what it grants and what it refuses."""
    release = f"cw-{uuid.uuid4().hex[:6]}"
    docs = [
        d
        for d in yaml.safe_load_all(
            helm.run(
                "template", release, str(CHART), f"--namespace={namespace}",
                "--set=watch.allNamespaces=true", "--show-only=templates/serviceaccount.yaml",
                "--show-only=templates/rbac.yaml",
            ).stdout
        )
        if d
    ]  # fmt: skip
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    manifest = yaml.safe_dump_all(docs)
    cluster.kubectl("apply", "-f", "-", stdin=manifest)
    try:
        account = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
        token = cluster.kubectl("create", "token", account, "-n", namespace, "--duration=10m")
        kubeconfig = _token_kubeconfig(cluster, token.strip(), tmp_path / "cw.kubeconfig")
        rtc = "realtimechannels.realtime.clarion.dev"
        granted = [
            ("watch", rtc, "-A"),
            ("patch", f"{rtc}/status", "-n", "default"),
            ("create", "deployments.apps", "-n", "kube-public"),
            ("delete", "ingresses.networking.k8s.io", "-n", "default"),
            ("list", "customresourcedefinitions.apiextensions.k8s.io"),
            ("get", "secrets", "-n", "default"),
            # Where get is granted: a changed Secret reconciles the channels naming it.
            ("watch", "secrets", "-A"),
        ]
        refused = [
            ("create", "secrets", "-n", "default"),
            ("create", "pods", "-n", "default"),
            ("delete", rtc, "-n", "default"),
            ("create", "customresourcedefinitions.apiextensions.k8s.io"),
            ("list", "nodes"),
            ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ]
        assert [_can_i(cluster, kubeconfig, *g) for g in granted] == ["yes"] * len(granted)
        assert [_can_i(cluster, kubeconfig, *r) for r in refused] == ["no"] * len(refused)
        assert _get_as(kubeconfig, "/api/v1/configmaps") == 403
    finally:
        cluster.kubectl("delete", "-f", "-", "--ignore-not-found", stdin=manifest, check=False)
