"""helm test: the RealtimeChannel API is served and the operator's liveness endpoint answers.

Standard library only, so it runs in the operator image. Everything it reaches comes from
the environment (in-cluster defaults), so the chart's tests also run it against the local
control plane.
"""

import json
import os
import ssl
import sys
import urllib.request

SA = "/var/run/secrets/kubernetes.io/serviceaccount"
ENV = os.environ  # noqa: TID251 - the process edge of a standalone script
API = ENV.get("CLARION_TEST_API", "https://kubernetes.default.svc")
TOKEN_FILE = ENV.get("CLARION_TEST_TOKEN_FILE", f"{SA}/token")
CA_FILE = ENV.get("CLARION_TEST_CA_FILE", f"{SA}/ca.crt")
HEALTHZ = ENV["CLARION_TEST_HEALTHZ_URL"]
GROUP_VERSION = "realtime.clarion.dev/v1alpha1"


def main() -> int:
    with open(TOKEN_FILE) as f:
        token = f.read().strip()
    request = urllib.request.Request(
        f"{API}/apis/{GROUP_VERSION}", headers={"Authorization": f"Bearer {token}"}
    )
    context = ssl.create_default_context(cafile=CA_FILE)
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        served = {r["name"] for r in json.load(response).get("resources", [])}
    if "realtimechannels" not in served:
        print(f"FAIL: {GROUP_VERSION} does not serve realtimechannels: {sorted(served)}")
        return 1
    print(f"ok: {GROUP_VERSION} serves realtimechannels")
    with urllib.request.urlopen(HEALTHZ, timeout=10) as response:
        if response.status != 200:
            print(f"FAIL: {HEALTHZ} answered {response.status}")
            return 1
    print(f"ok: {HEALTHZ} answered 200")
    return 0


if __name__ == "__main__":
    sys.exit(main())
