# The Clarion images, from one recipe: the broadcast worker and the operator. Build from
# the repository root, naming the image twice (its target and the distribution it installs):
#   docker build --target worker --build-arg COMPONENT=worker -t ghcr.io/clarion/worker:0.1.0 .
#   docker build --target operator --build-arg COMPONENT=operator -t ghcr.io/clarion/operator:0.1.0 .
# Each installs two distributions, its own (worker/pyproject.toml or
# operator/pyproject.toml) and clarion-contract (contract/pyproject.toml), and what they
# require, pinned by constraints.txt: not the other one, no development stack, no
# dependency listed here. COMPONENT picks the distribution (a Dockerfile cannot read the
# target's name); each target checks that its command is what COMPONENT installed.
# Layer order: the build stage writes the wheels' requirements (their Requires-Dist) to a
# file; the runtime stage installs those first, so a code change that keeps the
# requirements reuses the dependency layer and rebuilds only the wheels' layer. pip's
# downloads stay in a cache mount. The two images share every layer up to the
# dependencies.

FROM python:3.11.13-slim-bookworm AS build
ARG COMPONENT
RUN case "$COMPONENT" in worker|operator) ;; \
    *) echo "COMPONENT must be worker or operator (--build-arg), not '$COMPONENT'" >&2; exit 1;; esac
WORKDIR /src
RUN --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    --mount=type=cache,target=/root/.cache/pip \
    pip install -c /tmp/constraints.txt "hatchling>=1.25"
COPY contract ./contract
COPY ${COMPONENT} ./${COMPONENT}
RUN pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels ./contract ./${COMPONENT}
RUN mkdir /deps && python -c 'import sys, zipfile, email.parser as p; \
    meta = [z.read(n).decode() for w in sys.argv[1:] for z in [zipfile.ZipFile(w)] for n in z.namelist() if n.endswith(".dist-info/METADATA")]; \
    reqs = {r for m in meta for r in p.HeaderParser().parsestr(m).get_all("Requires-Dist", [])}; \
    print("\n".join(sorted(r for r in reqs if not r.startswith("clarion-") and "extra ==" not in r)))' \
    /wheels/*.whl > /deps/requirements.txt

FROM python:3.11.13-slim-bookworm AS runtime
# A named user for uid 65532: libraries that ask who they run as (kopf's peer id
# calls getpass.getuser()) fail with KeyError when the uid has no passwd entry.
RUN groupadd --system --gid 65532 clarion \
    && useradd --system --uid 65532 --gid 65532 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin clarion
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /deps/requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    --mount=type=cache,target=/root/.cache/pip \
    pip install -c /tmp/constraints.txt -r /tmp/requirements.txt
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels
# Both run as 65532 with a read-only root filesystem (the chart for the operator, the
# operator's rendered Pod for the worker), /tmp an emptyDir.
USER 65532:65532

FROM runtime AS worker
RUN command -v clarion-worker >/dev/null || { echo "the worker target needs --build-arg COMPONENT=worker" >&2; exit 1; }
EXPOSE 8080
ENTRYPOINT ["clarion-worker"]

FROM runtime AS operator
RUN command -v clarion-operator >/dev/null || { echo "the operator target needs --build-arg COMPONENT=operator" >&2; exit 1; }
EXPOSE 8082 8081
ENTRYPOINT ["clarion-operator"]
