"""Pinned versions of every component of the local stack.

The Go wrapper modules under ``devstack/go`` and the Maven pom under
``devstack/kafka`` name the same versions; a unit test fails when they disagree,
so this module stays the one place to read them from.
"""

from typing import Final

KAFKA: Final = "4.1.1"
KUBERNETES: Final = "1.34.4"
ETCD: Final = "3.6.4"
KWOK: Final = "0.7.0"
HELM: Final = "3.22.0"
#: crictl, for the real node's containerd (cri-tools follows Kubernetes' minor).
CRI_TOOLS: Final = "1.34.0"
#: Traefik v3, the ingress controller in front of the real node's pods. 3.6 is the newest
#: line buildable from the Go module proxy alone (3.7 requires a nested module the proxy
#: cannot serve: github.com/traefik/traefik/dynamic/ext).
TRAEFIK: Final = "3.6.12"
#: The Gateway API release whose CRDs (standard + experimental channel) the stack installs:
#: the one Traefik TRAEFIK is built against.
GATEWAY_API: Final = "1.4.1"
#: The client-go Helm's release builds against (its go.mod); stamps its default Kubernetes version.
HELM_CLIENT_GO: Final = "0.37.0"

#: Prometheus's Go module version (v0.3MM.P is Prometheus 3.MM.P): promtool, built only for
#: the chart's rule tests (`promtool test rules`), not started.
PROMETHEUS_MODULE: Final = "0.315.1"

#: Kubernetes publishes each staging module (k8s.io/api, client-go, ...) as v0.MINOR.PATCH.
KUBERNETES_STAGING: Final = "0." + KUBERNETES.split(".", 1)[1]
