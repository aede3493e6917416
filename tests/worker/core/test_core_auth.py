"""Token extraction, verification (HS256 and JWKS), claims mapping and origin checks."""

from __future__ import annotations

import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import example, given
from hypothesis import strategies as st

from clarion_worker.core.auth import (
    AuthError,
    TokenVerifier,
    check_origin,
    decode_segment,
    describe,
    origin_allowed,
    read_handshake,
    seconds_until_expiry,
    unverified_principal,
)
from clarion_worker.core.principal import Principal
from clarion_worker.core.protocol import CloseCode
from clarion_worker.core.settings import AuthSettings

NOW = 1_700_000_000.0
SECRET = b"s" * 64


def settings(**kw: Any) -> AuthSettings:
    base: dict[str, Any] = {
        "mode": "jwt",
        "algorithms": ("HS256", "RS256", "ES256"),
        "issuer": "https://idp",
        "audience": "clarion",
        "hmac_secret_file": "/s",
        "jwks_url": None,
        "jwks_file": "/j",
        "organizations_claim": "organizations",
        "user_claim": "sub",
        "allowed_origins": (),
        "leeway_seconds": 30,
    }
    base.update(kw)
    return AuthSettings(**base)


def claims(**kw: Any) -> dict[str, Any]:
    base = {"iss": "https://idp", "aud": "clarion", "sub": "u-1", "organizations": ["o1", "o2"],
            "exp": NOW + 600}  # fmt: skip
    base.update(kw)
    return {k: v for k, v in base.items() if v is not None}


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwks() -> dict[str, Any]:
    rsa_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(EC_KEY.public_key()))
    keys = [
        {**rsa_jwk, "kid": "r1", "alg": "RS256", "use": "sig"},
        {**ec_jwk, "kid": "e1", "alg": "ES256", "use": "sig"},
    ]
    return {"keys": keys}


def verifier(**kw: Any) -> TokenVerifier:
    return TokenVerifier(settings(**kw), hmac_secret=SECRET, jwks=jwks())


def hs(**kw: Any) -> str:
    return jwt.encode(claims(**kw), SECRET, algorithm="HS256")


def test_hs256_principal() -> None:
    principal = verifier().verify(hs(), now=NOW)
    assert principal == Principal(frozenset({"o1", "o2"}), "u-1", NOW + 600)


def test_jwks_rs256_and_es256_by_kid() -> None:
    rs = jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "r1"})
    es = jwt.encode(claims(organizations="solo"), EC_KEY, algorithm="ES256", headers={"kid": "e1"})
    assert verifier().verify(rs, now=NOW).organizations == {"o1", "o2"}
    assert verifier().verify(es, now=NOW).organizations == {"solo"}


def test_configurable_claims() -> None:
    token = hs(tenants=["t1"], uid="me", organizations=None)
    principal = verifier(organizations_claim="tenants", user_claim="uid").verify(token, now=NOW)
    assert principal.organizations == frozenset({"t1"})
    assert principal.user == "me"


@pytest.mark.parametrize(
    ("token", "reason", "status", "code"),
    [
        (None, "missing", 401, CloseCode.UNAUTHORIZED),
        ("", "missing", 401, CloseCode.UNAUTHORIZED),
        ("not.a.jwt", "malformed", 401, CloseCode.UNAUTHORIZED),
        ("x" * 9000, "malformed", 401, CloseCode.UNAUTHORIZED),
        (
            jwt.encode(claims(), b"w" * 64, algorithm="HS256"),
            "bad_signature",
            401,
            CloseCode.UNAUTHORIZED,
        ),
        (
            jwt.encode(claims(), SECRET, algorithm="HS512"),
            "bad_signature",
            401,
            CloseCode.UNAUTHORIZED,
        ),
        (
            jwt.encode(claims(), "", algorithm="none"),
            "bad_signature",
            401,
            CloseCode.UNAUTHORIZED,
        ),
        (hs(exp=NOW - 31), "expired", 401, CloseCode.TOKEN_EXPIRED),
        (hs(nbf=NOW + 31), "expired", 401, CloseCode.TOKEN_EXPIRED),
        (hs(exp=None), "missing_claims", 403, CloseCode.FORBIDDEN),
        (hs(exp="soon"), "malformed", 401, CloseCode.UNAUTHORIZED),
        (hs(nbf="x"), "malformed", 401, CloseCode.UNAUTHORIZED),
        (hs(aud="other"), "wrong_audience", 403, CloseCode.FORBIDDEN),
        (hs(iss="https://evil"), "wrong_issuer", 403, CloseCode.FORBIDDEN),
        (hs(sub=None, organizations=[]), "missing_claims", 403, CloseCode.FORBIDDEN),
        (
            jwt.encode(claims(), RSA_KEY, algorithm="RS256", headers={"kid": "zz"}),
            "unknown_key",
            401,
            CloseCode.UNAUTHORIZED,
        ),
        (
            jwt.encode(claims(), RSA_KEY, algorithm="RS256"),
            "unknown_key",
            401,
            CloseCode.UNAUTHORIZED,
        ),
        (
            jwt.encode(claims(), EC_KEY, algorithm="ES256", headers={"kid": "r1"}),
            "malformed",
            401,
            CloseCode.UNAUTHORIZED,
        ),
    ],
)
def test_failures(token: str | None, reason: str, status: int, code: CloseCode) -> None:
    with pytest.raises(AuthError) as caught:
        verifier().verify(token, now=NOW)
    assert caught.value.reason == reason
    assert caught.value.http_status == status
    assert caught.value.close_code is code
    assert json.loads(describe(caught.value)) == {"error": reason}


def test_leeway_accepts_small_skew() -> None:
    assert verifier().verify(hs(exp=NOW - 29, nbf=NOW + 29), now=NOW).user == "u-1"


def test_issuer_and_audience_unchecked_when_unset() -> None:
    token = hs(iss=None, aud=None)
    assert verifier(issuer=None, audience=None).verify(token, now=NOW).user == "u-1"


def test_hmac_token_without_secret_is_unknown_key() -> None:
    bare = TokenVerifier(settings(), jwks=jwks())
    with pytest.raises(AuthError) as caught:
        bare.verify(hs(), now=NOW)
    assert caught.value.reason == "unknown_key"


def test_single_jwks_key_without_kid_is_used() -> None:
    key = jwks()["keys"][0]
    del key["kid"]
    single = TokenVerifier(settings(), jwks={"keys": [key]})
    token = jwt.encode(claims(), RSA_KEY, algorithm="RS256")
    assert single.verify(token, now=NOW).user == "u-1"


def test_expiry_helper() -> None:
    principal = Principal(frozenset({"o"}), None, NOW + 100)
    assert seconds_until_expiry(principal, now=NOW) == 100
    assert seconds_until_expiry(principal, now=NOW + 500, leeway=30) == 0
    assert seconds_until_expiry(Principal(frozenset(), "u"), now=NOW) is None


def test_handshake_sources_and_negotiation() -> None:
    header = read_handshake({"authorization": "Bearer abc"}, {"access_token": "q"}, ["bearer.p"])
    assert (header.token, header.subprotocol, header.batch) == ("abc", None, False)
    proto = read_handshake({}, {"access_token": "q"}, ["clarion.v1", "bearer.p.q.r"])
    assert (proto.token, proto.subprotocol, proto.batch) == ("p.q.r", "clarion.v1", False)
    query = read_handshake({"authorization": "Basic xyz"}, {"access_token": "q", "batch": "1"})
    assert (query.token, query.subprotocol, query.batch) == ("q", None, True)
    batch = read_handshake({}, {}, ["clarion.v1", "clarion.batch.v1", "bearer."])
    assert (batch.token, batch.subprotocol, batch.batch) == (None, "clarion.batch.v1", True)


@pytest.mark.parametrize(
    ("origin", "allowed", "ok"),
    [
        ("https://app.example.com", [], True),
        (None, ["https://app.example.com"], True),
        ("https://app.example.com", ["https://app.example.com"], True),
        ("https://APP.example.com", ["https://app.example.com/"], True),
        ("https://evil.com", ["https://app.example.com"], False),
        ("https://a.b.example.com", ["*.example.com"], True),
        ("http://a.example.com", ["https://*.example.com"], False),
        ("https://a.example.com", ["https://*.example.com"], True),
        ("https://example.com", ["*.example.com"], False),
        ("https://evilexample.com", ["*.example.com"], False),
        ("https://example.com.evil.org", ["*.example.com"], False),
        ("null", ["*.example.com"], False),
        ("https://a.example.com/path", ["*.example.com"], False),
    ],
)
def test_origins(origin: str | None, allowed: list[str], ok: bool) -> None:
    assert origin_allowed(origin, allowed) is ok
    if not ok:
        with pytest.raises(AuthError) as caught:
            check_origin(origin, allowed)
        assert caught.value.http_status == 403


def test_unverified_principal_for_mode_none() -> None:
    assert unverified_principal({"organizationId": "o1, o2,", "userId": "u"}) == Principal(
        frozenset({"o1", "o2"}), "u", None
    )
    assert unverified_principal({}) == Principal(frozenset(), None, None)


# ---- required claims (issue 12, item 9) -------------------------------------------------


@pytest.mark.parametrize(
    ("token_claims", "principal"),
    [
        (claims(sub=None), Principal(frozenset({"o1", "o2"}), None, NOW + 600)),
        (claims(organizations=None), Principal(frozenset(), "u-1", NOW + 600)),
    ],
)
def test_default_policy_accepts_a_token_naming_a_user_or_organizations(
    token_claims: dict[str, Any], principal: Principal
) -> None:
    """Default: one of the two suffices (a user-only token gets its user's events only)."""
    token = jwt.encode(token_claims, SECRET, algorithm="HS256")
    assert TokenVerifier(settings(), hmac_secret=SECRET).verify(token, now=NOW) == principal


@pytest.mark.parametrize("missing", ["sub", "organizations"])
@pytest.mark.parametrize("absent", [None, ""])
def test_required_claims_refuse_a_token_without_them(missing: str, absent: object) -> None:
    verifier = TokenVerifier(settings(required_claims=("sub", "organizations")), hmac_secret=SECRET)
    full = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert verifier.verify(full, now=NOW).user == "u-1"
    payload = {k: v for k, v in claims().items() if k != missing}
    if absent is not None:
        payload[missing] = absent
    with pytest.raises(AuthError) as refused:
        verifier.verify(jwt.encode(payload, SECRET, algorithm="HS256"), now=NOW)
    assert refused.value.reason == "missing_claims"
    assert refused.value.http_status == 403
    assert refused.value.close_code == CloseCode.FORBIDDEN
    assert missing in str(refused.value)


def test_required_claims_follow_the_configured_claim_names() -> None:
    verifier = TokenVerifier(
        settings(organizations_claim="orgs", required_claims=("orgs",)), hmac_secret=SECRET
    )
    good = jwt.encode(claims(organizations=None, orgs=["o9"]), SECRET, algorithm="HS256")
    assert verifier.verify(good, now=NOW).organizations == {"o9"}
    with pytest.raises(AuthError):
        verifier.verify(jwt.encode(claims(), SECRET, algorithm="HS256"), now=NOW)


def test_hmac_key_is_prepared_once_per_verifier(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyJWT re-checks an HMAC secret (PEM, SSH, DER, JSON) on every decode; the verifier
    prepares it once (issue 17: the handshake path under a reconnect storm)."""
    tokens = {user: hs(sub=user) for user in ("u-1", "u-2", "u-3")}
    forged = jwt.encode(claims(), b"t" * 64, algorithm="HS256")
    prepared: list[bytes] = []
    original = jwt.algorithms.HMACAlgorithm.prepare_key

    def counting(self: jwt.algorithms.HMACAlgorithm, key: str | bytes) -> bytes:
        prepared.append(jwt.utils.force_bytes(key))
        return original(self, key)

    monkeypatch.setattr(jwt.algorithms.HMACAlgorithm, "prepare_key", counting)
    one = verifier()
    for user, token in tokens.items():
        assert one.verify(token, now=NOW).user == user
    assert prepared == [SECRET]
    with pytest.raises(AuthError) as failure:
        one.verify(forged, now=NOW)
    assert failure.value.reason == "bad_signature"
    assert prepared == [SECRET]


def test_a_token_is_decoded_once_per_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """The header that picks the key is read from its own segment; PyJWT decodes and
    checks the three segments once, in decode (not also in get_unverified_header)."""
    loads: list[object] = []
    original = jwt.api_jws.PyJWS._load

    def counting(self: jwt.api_jws.PyJWS, token: str | bytes) -> Any:
        loads.append(token)
        return original(self, token)

    token = hs()
    monkeypatch.setattr(jwt.api_jws.PyJWS, "_load", counting)
    assert verifier().verify(token, now=NOW).user == "u-1"
    assert len(loads) == 1


@pytest.mark.parametrize(
    "token",
    ["", ".", "!!!.x.y", "e30.x.y", "WzFd.x.y", "eyJhbGciOiJIUzI1NiJ9", "bm90IGpzb24.x.y"],
)
def test_malformed_headers_are_malformed(token: str) -> None:
    with pytest.raises(AuthError) as failure:
        verifier().verify(token, now=NOW)
    assert failure.value.reason in ("missing", "malformed", "bad_signature")
    assert failure.value.http_status == 401


def test_principals_naming_the_same_organizations_share_one_set() -> None:
    """Each idle connection keeps its principal: the organization set is shared, not one
    frozenset per connection (issue 17, W3)."""
    one = verifier()
    first = one.verify(hs(sub="u-1", organizations=["o1", "o2"]), now=NOW)
    second = one.verify(hs(sub="u-2", organizations=["o2", "o1"]), now=NOW)
    other = one.verify(hs(sub="u-3", organizations=["o3"]), now=NOW)
    assert first.organizations == second.organizations == {"o1", "o2"}
    assert first.organizations is second.organizations
    assert other.organizations == {"o3"}


_SEGMENT_BYTES = st.sampled_from(list(b"ABCXYZabcxyz0189-_=+/!. \x00\xff"))


@given(st.lists(_SEGMENT_BYTES, max_size=24).map(bytes))
@example(b"eyJhbGciOiJIUzI1NiJ9")  # a real header
@example(b"QQ")  # "A", unpadded
@example(b"QR")  # non-canonical: decodes to "A" too
@example(b"QQ==")  # padded
@example(b"Q")  # a length no base64 has
def test_a_segment_decodes_exactly_as_pyjwt_decodes_it(segment: bytes) -> None:
    """``decode_segment`` replaces PyJWT's ``_decode_base64url_segment`` (W4): the same
    bytes out, or PyJWT's own error, for any segment."""
    pyjwt = jwt.PyJWS._decode_base64url_segment
    try:
        expected: bytes | str = pyjwt(segment, "payload")
    except jwt.DecodeError as error:
        expected = str(error)
    try:
        got: bytes | str = decode_segment(segment, "payload")
    except jwt.DecodeError as error:
        got = str(error)
    assert got == expected


def test_the_verifier_decodes_segments_with_decode_segment_and_still_refuses_junk() -> None:
    verifier = TokenVerifier(settings(), hmac_secret=SECRET)
    assert verifier._decoder._jws._decode_base64url_segment is decode_segment
    claims = {"iss": "https://idp", "aud": "clarion", "exp": NOW + 60, "organizations": ["o1"]}
    good = jwt.encode(claims, SECRET, "HS256")
    assert verifier.verify(good, now=NOW).organizations == frozenset({"o1"})
    # GHSA-hxm8-2xgr-2p9m: junk in a segment is refused, not skipped by base64.
    head, payload, signature = good.split(".")
    with pytest.raises(AuthError) as refused:
        verifier.verify(".".join((head, payload[:4] + "!!!!" + payload[4:], signature)), now=NOW)
    assert refused.value.reason == "malformed"
