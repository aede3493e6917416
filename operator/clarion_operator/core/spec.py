"""The validated, typed ``RealtimeChannel`` spec.

:func:`parse_spec` validates the raw ``spec`` dict with the spec's models
(``clarion_contract.channel_spec``, the ones the CRD is generated from), applying every
default itself: the CRD also defaults, but objects stored before a default existed, or
written by a client that bypassed the schema, must still produce the same workers. The
problems are collected and raised together as :class:`SpecError`, each with its path, so
one status message tells the user everything to fix. The models' validators repeat the
CRD's CEL rules on purpose, so objects created before a rule existed are still rejected.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from pydantic import ValidationError

from clarion_contract.channel_spec import (
    DEFAULT_LIMITS as DEFAULT_LIMITS,
)
from clarion_contract.channel_spec import (
    DEFAULT_REQUESTS as DEFAULT_REQUESTS,
)
from clarion_contract.channel_spec import (
    AuthSpec as AuthSpec,
)
from clarion_contract.channel_spec import (
    DeletionPolicy as DeletionPolicy,
)
from clarion_contract.channel_spec import (
    ExposureType as ExposureType,
)
from clarion_contract.channel_spec import (
    GatewayParent as GatewayParent,
)
from clarion_contract.channel_spec import (
    IngressProfile as IngressProfile,
)
from clarion_contract.channel_spec import (
    IngressSpec as IngressSpec,
)
from clarion_contract.channel_spec import (
    KafkaSpec as KafkaSpec,
)
from clarion_contract.channel_spec import (
    LimitsSpec as LimitsSpec,
)
from clarion_contract.channel_spec import (
    MonitoringSpec as MonitoringSpec,
)
from clarion_contract.channel_spec import (
    RealtimeChannelSpec,
)
from clarion_contract.channel_spec import (
    ServerSpec as ServerSpec,
)
from clarion_contract.channel_spec import (
    TopicSpec as TopicSpec,
)
from clarion_contract.channel_spec import (
    WorkersSpec as WorkersSpec,
)
from clarion_contract.worker_config import RoutingSettings
from clarion_contract.worker_config import problems as settings_problems
from clarion_operator.core import crd
from clarion_operator.core.errors import PermanentError
from clarion_operator.core.reasons import Reason

#: ``spec.routing`` is the worker's own routing settings model (unset keys: its defaults).
RoutingSpec = RoutingSettings

_EMPTY: Final[Mapping[str, str]] = MappingProxyType({})


@dataclass(frozen=True)
class ExposureSpec:
    """How clients reach the workers: an HTTPRoute, an Ingress, or neither.

    ``spec.exposure`` when present; otherwise the deprecated ``spec.ingress`` with
    ``enabled: true`` converts to ``type: ingress, profile: nginx`` (``legacy``), so
    channels written before ``exposure`` existed render exactly what they did.
    """

    type: ExposureType = "none"
    hostnames: tuple[str, ...] = ()
    sticky_cookie_name: str = crd.DEFAULT_STICKY_COOKIE
    sticky_cookie_max_age_seconds: int = crd.DEFAULT_STICKY_MAX_AGE
    stream_timeout_seconds: int = crd.DEFAULT_STREAM_TIMEOUT
    gateway: GatewayParent | None = None
    ingress_class: str | None = None
    profile: IngressProfile = "generic"
    tls_secret_name: str | None = None
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    legacy: bool = False


@dataclass(frozen=True)
class ChannelSpec:
    """The validated sections of a spec, and the traffic entry they resolve to."""

    kafka: KafkaSpec
    topics: tuple[TopicSpec, ...]
    auth: AuthSpec
    routing: RoutingSpec = field(default_factory=RoutingSpec)
    server: ServerSpec = field(default_factory=ServerSpec)
    workers: WorkersSpec = field(default_factory=WorkersSpec)
    ingress: IngressSpec = field(default_factory=IngressSpec)
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    #: What renders the traffic entry (``spec.exposure``, or the converted ``spec.ingress``).
    exposure: ExposureSpec = field(default_factory=ExposureSpec)


# --- errors --------------------------------------------------------------------------


@dataclass(frozen=True)
class SpecProblem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(PermanentError):
    """The spec cannot be acted on; ``problems`` lists every reason with its path."""

    def __init__(self, problems: list[SpecProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__(Reason.INVALID_SPEC, "; ".join(str(p) for p in self.problems))


#: What a missing required key means, where more can be said than "is required".
_MISSING: Final = {
    # No silent default: running without authentication must be a visible choice.
    "spec.auth": "is required (set mode: none explicitly to run without authentication)",
    "spec.topics": "is required: at least one topic",
}


# --- parsing -------------------------------------------------------------------------


def validate_name(name: str) -> list[SpecProblem]:
    """Problems with the channel's own name (it prefixes every child object's name)."""
    if len(name) > crd.MAX_NAME_LENGTH or re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) is None:
        return [
            SpecProblem(
                "metadata.name",
                f"must be a DNS-1035 label of at most {crd.MAX_NAME_LENGTH} characters "
                f"(got {name!r})",
            )
        ]
    return []


def parse_spec(raw: Mapping[str, object], *, name: str | None = None) -> ChannelSpec:
    """Validate ``raw`` (and ``name`` when given) or raise :class:`SpecError` listing all."""
    problems = [] if name is None else validate_name(name)
    if not isinstance(raw, Mapping):
        raise SpecError([SpecProblem("spec", "must be an object")])
    try:
        model = RealtimeChannelSpec.model_validate(_without_nulls(raw))
    except ValidationError as error:
        for line in settings_problems(error, "spec"):
            path, _, message = line.partition(": ")
            if message == "required":
                message = _MISSING.get(path, "is required")
            problems.append(SpecProblem(path, message))
        raise SpecError(problems) from None
    if problems:
        raise SpecError(problems)
    return ChannelSpec(
        kafka=model.kafka,
        topics=model.topics,
        auth=model.auth,
        routing=model.routing,
        server=model.server,
        workers=model.workers,
        ingress=model.ingress,
        monitoring=model.monitoring,
        exposure=_exposure(model),
    )


def _without_nulls(value: object) -> object:
    """As the API server does, null values are dropped: the key is unset (its default)."""
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(item) for item in value]
    return value


def _exposure(model: RealtimeChannelSpec) -> ExposureSpec:
    section = model.exposure
    if section is None:
        legacy = model.ingress
        if not legacy.enabled:
            return ExposureSpec()
        return ExposureSpec(
            type="ingress",
            hostnames=() if legacy.host is None else (legacy.host,),
            sticky_cookie_name=legacy.sticky_cookie.name,
            sticky_cookie_max_age_seconds=legacy.sticky_cookie.max_age_seconds,
            ingress_class=legacy.class_name,
            profile="nginx",
            tls_secret_name=legacy.tls_secret_name,
            annotations=legacy.annotations,
            legacy=True,
        )
    ingress = section.ingress
    return ExposureSpec(
        type=section.type,
        hostnames=section.hostnames,
        sticky_cookie_name=section.sticky_cookie.name,
        sticky_cookie_max_age_seconds=section.sticky_cookie.max_age_seconds,
        stream_timeout_seconds=section.stream_timeout_seconds,
        gateway=section.gateway,
        ingress_class=None if ingress is None else ingress.class_name,
        profile="generic" if ingress is None else ingress.profile,
        tls_secret_name=None if ingress is None else ingress.tls_secret_name,
        annotations=_EMPTY if ingress is None else ingress.annotations,
    )
