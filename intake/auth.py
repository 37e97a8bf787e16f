"""Authenticate a delivery: pure functions of headers, raw body, secret and clock.

Every comparison is constant-time (`hmac.compare_digest`). A failure raises `Unauthorized` whose
`reason` is a short fixed word (metrics label, log field) — never the credential or signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping

from pydantic import SecretStr


class Unauthorized(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _secret(secret: SecretStr | None) -> bytes:
    if secret is None or not secret.get_secret_value():
        raise Unauthorized("not_configured")
    return secret.get_secret_value().encode()


def _hmac_hex(key: bytes, message: bytes) -> str:
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.strip().lower().encode(), expected.encode())


def _timestamp(value: str | None, now: float, window_s: float) -> str:
    if not value:
        raise Unauthorized("missing_timestamp")
    try:
        ts = int(value.strip())
    except ValueError:
        raise Unauthorized("bad_timestamp") from None
    if abs(now - ts) > window_s:
        raise Unauthorized("stale_timestamp")
    return str(ts)


def check_alertmanager(headers: Mapping[str, str], token: SecretStr | None) -> None:
    """`Authorization: Bearer <token>`, or basic auth with the token as the password."""
    expected = _secret(token)
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        given = value.strip().encode()
    elif scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized("bad_credentials") from None
        given = decoded.partition(b":")[2]
    elif not auth:
        raise Unauthorized("missing_credentials")
    else:
        raise Unauthorized("bad_credentials")
    if not hmac.compare_digest(given, expected):
        raise Unauthorized("bad_credentials")


GRAFANA_SIGNATURE_HEADERS = ("x-grafana-alerting-signature", "x-grafana-alert-signature")


def check_grafana(
    headers: Mapping[str, str],
    body: bytes,
    secret: SecretStr | None,
    *,
    timestamp_header: str | None,
    now: float,
    window_s: float,
) -> None:
    """Hex HMAC-SHA256 of the body, or of `"<unix>:" + body` when a timestamp header is set."""
    key = _secret(secret)
    given = next((headers[h] for h in GRAFANA_SIGNATURE_HEADERS if headers.get(h)), None)
    if not given:
        raise Unauthorized("missing_signature")
    message = body
    if timestamp_header:
        ts = _timestamp(headers.get(timestamp_header.lower()), now, window_s)
        message = f"{ts}:".encode() + body
    if not _same(given, _hmac_hex(key, message)):
        raise Unauthorized("bad_signature")


def check_sentry(headers: Mapping[str, str], body: bytes, secret: SecretStr | None) -> None:
    """`Sentry-Hook-Signature` = hex HMAC-SHA256(client secret, raw body)."""
    key = _secret(secret)
    given = headers.get("sentry-hook-signature")
    if not given:
        raise Unauthorized("missing_signature")
    if not _same(given, _hmac_hex(key, body)):
        raise Unauthorized("bad_signature")


def check_pagerduty(headers: Mapping[str, str], body: bytes, secret: SecretStr | None) -> None:
    """`X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]`; any one may match (secret rotation)."""
    key = _secret(secret)
    given = headers.get("x-pagerduty-signature")
    if not given:
        raise Unauthorized("missing_signature")
    expected = _hmac_hex(key, body)
    matched = False
    for part in given.split(","):
        version, _, value = part.strip().partition("=")
        # evaluate every candidate: no early exit that would time which one matched
        matched = (version == "v1" and _same(value, expected)) | matched
    if not matched:
        raise Unauthorized("bad_signature")


def check_generic(
    headers: Mapping[str, str],
    body: bytes,
    secret: SecretStr | None,
    *,
    now: float,
    window_s: float,
) -> None:
    """`X-Signature: sha256=<hex HMAC(secret, "<ts>." + body)>` with a fresh `X-Timestamp`."""
    key = _secret(secret)
    given = headers.get("x-signature")
    if not given:
        raise Unauthorized("missing_signature")
    ts = _timestamp(headers.get("x-timestamp"), now, window_s)
    scheme, _, value = given.strip().partition("=")
    if scheme.lower() != "sha256":
        raise Unauthorized("bad_signature")
    if not _same(value, _hmac_hex(key, f"{ts}.".encode() + body)):
        raise Unauthorized("bad_signature")


# Helpers for senders (tests, the bench, the sandbox): the exact signatures the checks expect.


def sign_generic(secret: str, body: bytes, ts: int) -> dict[str, str]:
    sig = _hmac_hex(secret.encode(), f"{ts}.".encode() + body)
    return {"X-Timestamp": str(ts), "X-Signature": f"sha256={sig}"}


def sign_grafana(
    secret: str, body: bytes, *, ts: int | None = None, timestamp_header: str | None = None
) -> dict[str, str]:
    if ts is None or timestamp_header is None:
        return {"X-Grafana-Alerting-Signature": _hmac_hex(secret.encode(), body)}
    sig = _hmac_hex(secret.encode(), f"{ts}:".encode() + body)
    return {"X-Grafana-Alerting-Signature": sig, timestamp_header: str(ts)}


def sign_sentry(secret: str, body: bytes) -> dict[str, str]:
    return {"Sentry-Hook-Signature": _hmac_hex(secret.encode(), body)}


def sign_pagerduty(secret: str, body: bytes) -> dict[str, str]:
    return {"X-PagerDuty-Signature": f"v1={_hmac_hex(secret.encode(), body)}"}
