"""Token extraction and verification (PyJWT), claims to ``Principal``, origin checks.

Where the token comes from, in order of preference:

1. ``Authorization: Bearer <token>`` (server-side clients, SSE via fetch);
2. the ``Sec-WebSocket-Protocol`` header: browsers cannot set headers on a WebSocket, so
   the client offers ``["clarion.v1", "bearer.<token>"]``. The server echoes
   ``clarion.batch.v1`` if offered (and then sends batch frames), else ``clarion.v1``;
   it never echoes the ``bearer.`` entry, so the token is not reflected in responses;
3. the ``access_token`` query parameter (EventSource cannot set headers either; it ends
   up in access logs, so prefer the others).

Batch frames are opted into with the ``clarion.batch.v1`` subprotocol or ``batch=1``.

Failures are ``AuthError`` with a closed ``reason``; before the upgrade the edge answers
``http_status`` (401 or 403), after it closes with ``close_code`` (expiry -> 4004).
Expiry and not-before are checked here against an injected ``now``, with leeway, so the
result never depends on the wall clock inside PyJWT.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import jwt
from jwt.algorithms import HMACAlgorithm

from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import ALGORITHMS_HMAC, AuthSettings

SUBPROTOCOL: Final = "clarion.v1"
SUBPROTOCOL_BATCH: Final = "clarion.batch.v1"
BEARER_SUBPROTOCOL_PREFIX: Final = "bearer."
MAX_TOKEN_CHARS: Final = 8192
_MAX_SHARED_ORG_SETS: Final = 65536

AuthFailureReason = Literal[
    "missing",
    "malformed",
    "bad_signature",
    "expired",
    "wrong_audience",
    "wrong_issuer",
    "unknown_key",
    "origin_not_allowed",
    "missing_claims",
]
_FORBIDDEN: Final = frozenset(
    {"wrong_audience", "wrong_issuer", "origin_not_allowed", "missing_claims"}
)


class AuthError(Exception):
    def __init__(self, reason: AuthFailureReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: AuthFailureReason = reason

    @property
    def http_status(self) -> int:
        """The status to answer before the upgrade (or for SSE)."""
        return 403 if self.reason in _FORBIDDEN else 401

    @property
    def close_code(self) -> CloseCode:
        """The close code to use once the WebSocket is open."""
        if self.reason == "expired":
            return CloseCode.TOKEN_EXPIRED
        return CloseCode.FORBIDDEN if self.reason in _FORBIDDEN else CloseCode.UNAUTHORIZED


@dataclass(frozen=True, slots=True)
class Handshake:
    """What the request offers: the token, the subprotocol to echo, and batch opt-in."""

    token: str | None
    subprotocol: str | None
    batch: bool


def read_handshake(
    headers: Mapping[str, str], query: Mapping[str, str], subprotocols: Sequence[str] = ()
) -> Handshake:
    """Extract the token and negotiate features; ``headers`` keys are lower-case."""
    token: str | None = None
    authorization = headers.get("authorization", "")
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        token = credentials.strip()
    offered = [item.strip() for item in subprotocols]
    if token is None:
        for item in offered:
            if item.startswith(BEARER_SUBPROTOCOL_PREFIX) and len(item) > len(
                BEARER_SUBPROTOCOL_PREFIX
            ):
                token = item[len(BEARER_SUBPROTOCOL_PREFIX) :]
                break
    if token is None and query.get("access_token"):
        token = query["access_token"]
    batch = SUBPROTOCOL_BATCH in offered or query.get("batch") in ("1", "true")
    if SUBPROTOCOL_BATCH in offered:
        subprotocol: str | None = SUBPROTOCOL_BATCH
    elif SUBPROTOCOL in offered:
        subprotocol = SUBPROTOCOL
    else:
        subprotocol = None
    return Handshake(token, subprotocol, batch)


class TokenVerifier:
    """Verifies tokens with an HMAC secret and/or a JWKS document supplied by the edge.

    The edge reads ``hmacSecretFile``, fetches and caches the JWKS, and calls
    ``replace_jwks`` when it changes (e.g. after an ``unknown_key`` failure, rate-limited).
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        hmac_secret: bytes | None = None,
        jwks: Mapping[str, Any] | None = None,
        max_token_chars: int = MAX_TOKEN_CHARS,
    ) -> None:
        self._settings = settings
        #: The edge bounds request heads (limits.maxHeaderBytes); a token that fits in one
        #: must not then be refused as "too long" here.
        self._max_token_chars = max_token_chars
        self._hmac_secret = hmac_secret
        self._decoder = _PreparedKeyDecoder()
        #: One frozenset per distinct set of organizations, shared by every principal
        #: naming it (an idle connection keeps its principal: ~200 bytes each, W3).
        self._org_sets: dict[frozenset[str], frozenset[str]] = {}
        self._keys: dict[str, jwt.PyJWK] = {}
        self._single_key: jwt.PyJWK | None = None
        if jwks is not None:
            self.replace_jwks(jwks)

    def replace_jwks(self, jwks: Mapping[str, Any]) -> None:
        """Install a new key set; keys without ``kid`` are usable only when alone."""
        key_set = jwt.PyJWKSet.from_dict(dict(jwks))
        self._keys = {key.key_id: key for key in key_set.keys if key.key_id}
        self._single_key = key_set.keys[0] if len(key_set.keys) == 1 else None

    def verify(self, token: str | None, *, now: float) -> Principal:
        settings = self._settings
        if not token:
            raise AuthError("missing")
        if len(token) > self._max_token_chars:
            raise AuthError("malformed", "token too long")
        # The header alone (its segment only: PyJWT's get_unverified_header would decode and
        # check all three segments, which decode() below does again).
        header = _unverified_header(token)
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise AuthError("bad_signature", f"algorithm {algorithm!r} not accepted")
        key = self._key_for(algorithm, header.get("kid"))
        try:
            claims: dict[str, Any] = self._decoder.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=settings.audience,
                issuer=settings.issuer,
                options={
                    "require": ["exp"],
                    "verify_exp": False,  # checked below against the injected clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": settings.audience is not None,
                    "verify_iss": settings.issuer is not None,
                },
            )
        except jwt.InvalidAudienceError as error:
            raise AuthError("wrong_audience") from error
        except jwt.InvalidIssuerError as error:
            raise AuthError("wrong_issuer") from error
        except jwt.MissingRequiredClaimError as error:
            raise AuthError("missing_claims", str(error)) from error
        except jwt.InvalidSignatureError as error:
            raise AuthError("bad_signature") from error
        except (jwt.InvalidTokenError, jwt.PyJWKError, ValueError, TypeError) as error:
            raise AuthError("malformed", type(error).__name__) from error
        return self._principal(claims, now)

    def _key_for(self, algorithm: str, kid: object) -> Any:
        if algorithm in ALGORITHMS_HMAC:
            if self._hmac_secret is None:
                raise AuthError("unknown_key", "no HMAC secret configured")
            return self._hmac_secret
        found = self._keys.get(kid) if isinstance(kid, str) else self._single_key
        if found is None:
            raise AuthError("unknown_key", f"no key for kid {kid!r}")
        return found

    def _shared(self, organizations: frozenset[str]) -> frozenset[str]:
        if len(self._org_sets) >= _MAX_SHARED_ORG_SETS:
            self._org_sets.clear()  # bounded: tokens name whatever sets they like
        return self._org_sets.setdefault(organizations, organizations)

    def _principal(self, claims: Mapping[str, Any], now: float) -> Principal:
        leeway = self._settings.leeway_seconds
        expires_at = _number(claims.get("exp"))
        if expires_at is None:
            raise AuthError("malformed", "exp must be a number")
        if now >= expires_at + leeway:
            raise AuthError("expired")
        not_before = claims.get("nbf")
        if not_before is not None:
            nbf = _number(not_before)
            if nbf is None:
                raise AuthError("malformed", "nbf must be a number")
            if now + leeway < nbf:
                raise AuthError("expired", "token not yet valid")
        organizations = self._shared(_organizations(claims.get(self._settings.organizations_claim)))
        user = claims.get(self._settings.user_claim)
        if not isinstance(user, str) or not user:
            user = None
        for name in self._settings.required_claims:
            if not _present(claims.get(name)):
                raise AuthError("missing_claims", f"token has no {name!r} claim")
        if not organizations and user is None:
            raise AuthError("missing_claims", "token names no organization and no user")
        return Principal(organizations, user, expires_at)


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWT, not verified: what picks the key (alg, kid)."""
    segment, dot, _ = token.partition(".")
    if not dot or not segment:
        raise AuthError("malformed", "Not enough segments")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        header = json.loads(raw)
    except (ValueError, RecursionError) as error:  # binascii.Error, JSON and Unicode errors
        raise AuthError("malformed", "Invalid header") from error
    if not isinstance(header, dict):
        raise AuthError("malformed", "Invalid header string: must be a json object")
    return header


class _PreparedHMAC(HMACAlgorithm):
    """PyJWT's HMAC algorithm, preparing each key once instead of on every call.

    ``prepare_key`` is a pure function of the key's bytes, and PyJWT runs it for every
    token: PEM, SSH, DER (three parser attempts through ``cryptography``) and JSON checks
    of the secret. The worker verifies every handshake with the same secret.
    """

    def __init__(self, hash_alg: Any) -> None:
        super().__init__(hash_alg)
        self._raw: str | bytes | None = None
        self._prepared = b""

    def prepare_key(self, key: str | bytes) -> bytes:
        if self._raw is None or key != self._raw:
            self._prepared = super().prepare_key(key)  # raises on a bad key, nothing kept
            self._raw = key
        return self._prepared


#: PyJWT's own check of each segment, for what the fast path below leaves to it.
_PYJWT_DECODE_SEGMENT: Final = getattr(jwt.PyJWS, "_decode_base64url_segment", None)
_BASE64URL_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def decode_segment(segment: bytes, name: str) -> bytes:
    """PyJWT's ``_decode_base64url_segment`` with its alphabet check done in C.

    PyJWT checks every character of each segment in a Python generator: a third of a
    verification (32 -> 22 us, ``bench/handshake_cost.py verify``; issue 17's W4). An
    unpadded segment of the alphabet whose decoding re-encodes to itself is decoded here,
    with the same result PyJWT gives; anything else (padding, other characters, a bad
    length) gets PyJWT's own verdict.
    """
    if (
        not segment.endswith(b"=")
        and len(segment) % 4 != 1
        and not segment.translate(None, _BASE64URL_ALPHABET)
    ):
        decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
        if base64.urlsafe_b64encode(decoded).rstrip(b"=") == segment:
            return decoded
    assert _PYJWT_DECODE_SEGMENT is not None  # installed only where PyJWT has it
    decoded_by_pyjwt: bytes = _PYJWT_DECODE_SEGMENT(segment, name)
    return decoded_by_pyjwt


class _PreparedKeyDecoder(jwt.PyJWT):
    """``jwt.decode`` with HS256/384/512 keys prepared once per verifier, and segments
    decoded by ``decode_segment`` where the installed PyJWT has the method it replaces
    (pinned in constraints.txt; tests/worker/core/test_core_auth.py holds the seam)."""

    def __init__(self) -> None:
        super().__init__()
        if _PYJWT_DECODE_SEGMENT is not None:
            # An instance attribute: PyJWS calls ``self._decode_base64url_segment``.
            self._jws._decode_base64url_segment = decode_segment  # type: ignore[method-assign]
        for name, hash_alg in (
            ("HS256", HMACAlgorithm.SHA256),
            ("HS384", HMACAlgorithm.SHA384),
            ("HS512", HMACAlgorithm.SHA512),
        ):
            self._jws.unregister_algorithm(name)
            self._jws.register_algorithm(name, _PreparedHMAC(hash_alg))


def _present(value: object) -> bool:
    """A required claim counts when it holds something: not absent, null, "" or []."""
    if value is None:
        return False
    if isinstance(value, str | list | dict):
        return bool(value)
    return True


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _organizations(value: object) -> frozenset[str]:
    # A single organization is often a plain string claim; several are a list.
    if isinstance(value, str):
        return frozenset({value}) if value else frozenset()
    if isinstance(value, list):
        return frozenset(item for item in value if isinstance(item, str) and item)
    return frozenset()


def seconds_until_expiry(principal: Principal, *, now: float, leeway: float = 0) -> float | None:
    """When the edge must close (4004) or demand a refresh; None if the token never expires."""
    if principal.expires_at is None:
        return None
    return max(0.0, principal.expires_at + leeway - now)


def unverified_principal(query: Mapping[str, str]) -> Principal:
    """``auth.mode: none`` (development only): the client names itself in the query.

    ``organizationId`` (comma-separated) and ``userId``; nothing is verified.
    """
    organizations = frozenset(
        item.strip() for item in query.get("organizationId", "").split(",") if item.strip()
    )
    return Principal(organizations, query.get("userId") or None, None)


_ORIGIN: Final = re.compile(r"(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>[^/]+)")


def origin_allowed(origin: str | None, allowed: Sequence[str]) -> bool:
    """Exact match, or ``*.example.com`` (any subdomain, not the apex; scheme optional).

    An empty allow-list allows everything. A request without ``Origin`` is not from a
    browser page (origin checks only defend browsers), so it is allowed.
    """
    if not allowed or origin is None:
        return True
    origin = origin.strip().lower()
    match = _ORIGIN.fullmatch(origin)
    if match is None:
        return False
    scheme, host = match.group("scheme"), match.group("host")
    for pattern in allowed:
        pattern = pattern.strip().lower().rstrip("/")
        if pattern == origin:
            return True
        wanted = _ORIGIN.fullmatch(pattern)
        if wanted is None or not wanted.group("host").startswith("*."):
            continue
        if wanted.group("scheme") not in (None, scheme):
            continue
        suffix = wanted.group("host")[1:]  # ".example.com"
        if host.endswith(suffix) and len(host) > len(suffix):
            return True
    return False


def check_origin(origin: str | None, allowed: Sequence[str]) -> None:
    if not origin_allowed(origin, allowed):
        raise AuthError("origin_not_allowed", f"origin {origin!r}")


def describe(failure: AuthError) -> str:
    """A JSON error body for the HTTP rejection."""
    return json.dumps({"error": failure.reason}, separators=(",", ":"))
