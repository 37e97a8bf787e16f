"""Each source's authentication, as pure functions (constant-time compare, replay window)."""

from __future__ import annotations

import base64
import time

import pytest
from pydantic import SecretStr

from intake import auth

pytestmark = pytest.mark.unit

SECRET = SecretStr("s3cret")
BODY = b'{"a": 1}'
NOW = 1_800_000_000.0


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"authorization": "Bearer s3cret"}, None),
        ({"authorization": "bearer s3cret"}, None),
        ({"authorization": basic("alertmanager", "s3cret")}, None),
        ({"authorization": basic("", "s3cret")}, None),
        ({}, "missing_credentials"),
        ({"authorization": "Bearer wrong"}, "bad_credentials"),
        ({"authorization": basic("s3cret", "wrong")}, "bad_credentials"),
        ({"authorization": "Basic !!!notbase64"}, "bad_credentials"),
        ({"authorization": "Token s3cret"}, "bad_credentials"),
    ],
)
def test_alertmanager_bearer_or_basic(headers: dict[str, str], reason: str | None) -> None:
    if reason is None:
        auth.check_alertmanager(headers, SECRET)
    else:
        with pytest.raises(auth.Unauthorized) as caught:
            auth.check_alertmanager(headers, SECRET)
        assert caught.value.reason == reason


def test_unconfigured_source_rejects_everything() -> None:
    with pytest.raises(auth.Unauthorized) as caught:
        auth.check_alertmanager({"authorization": "Bearer "}, None)
    assert caught.value.reason == "not_configured"
    with pytest.raises(auth.Unauthorized):
        auth.check_sentry(auth.sign_sentry("", BODY), BODY, SecretStr(""))


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


@pytest.mark.parametrize("header", ["X-Grafana-Alerting-Signature", "X-Grafana-Alert-Signature"])
def test_grafana_accepts_both_header_names(header: str) -> None:
    sig = auth.sign_grafana("s3cret", BODY)["X-Grafana-Alerting-Signature"]
    auth.check_grafana(
        {header.lower(): sig}, BODY, SECRET, timestamp_header=None, now=NOW, window_s=300
    )


def test_grafana_with_timestamp_signs_unix_colon_body() -> None:
    ts_header = "X-Grafana-Alerting-Signature-Timestamp"
    good = _lower(auth.sign_grafana("s3cret", BODY, ts=int(NOW), timestamp_header=ts_header))
    auth.check_grafana(good, BODY, SECRET, timestamp_header=ts_header, now=NOW, window_s=300)
    # the body-only signature is not enough once a timestamp header is configured
    body_only = _lower(auth.sign_grafana("s3cret", BODY))
    body_only[ts_header.lower()] = str(int(NOW))
    with pytest.raises(auth.Unauthorized):
        auth.check_grafana(
            body_only, BODY, SECRET, timestamp_header=ts_header, now=NOW, window_s=300
        )
    stale = _lower(auth.sign_grafana("s3cret", BODY, ts=int(NOW) - 301, timestamp_header=ts_header))
    with pytest.raises(auth.Unauthorized) as caught:
        auth.check_grafana(stale, BODY, SECRET, timestamp_header=ts_header, now=NOW, window_s=300)
    assert caught.value.reason == "stale_timestamp"


def test_sentry_signature_is_hmac_of_raw_body() -> None:
    auth.check_sentry(_lower(auth.sign_sentry("s3cret", BODY)), BODY, SECRET)
    with pytest.raises(auth.Unauthorized):
        auth.check_sentry(_lower(auth.sign_sentry("s3cret", BODY)), BODY + b" ", SECRET)
    with pytest.raises(auth.Unauthorized) as caught:
        auth.check_sentry({}, BODY, SECRET)
    assert caught.value.reason == "missing_signature"


def test_pagerduty_any_signature_of_the_list_may_match() -> None:
    good = auth.sign_pagerduty("s3cret", BODY)["X-PagerDuty-Signature"]
    old = auth.sign_pagerduty("old-secret", BODY)["X-PagerDuty-Signature"]
    auth.check_pagerduty({"x-pagerduty-signature": f"{old},{good}"}, BODY, SECRET)
    auth.check_pagerduty({"x-pagerduty-signature": f"{good}, {old}"}, BODY, SECRET)
    with pytest.raises(auth.Unauthorized):
        auth.check_pagerduty({"x-pagerduty-signature": old}, BODY, SECRET)
    with pytest.raises(auth.Unauthorized):
        auth.check_pagerduty({"x-pagerduty-signature": good.replace("v1=", "v0=")}, BODY, SECRET)


@pytest.mark.parametrize(
    ("offset", "ok"), [(0, True), (-299, True), (299, True), (-301, False), (301, False)]
)
def test_generic_replay_window_is_five_minutes(offset: int, ok: bool) -> None:
    headers = _lower(auth.sign_generic("s3cret", BODY, int(NOW) + offset))
    if ok:
        auth.check_generic(headers, BODY, SECRET, now=NOW, window_s=300)
    else:
        with pytest.raises(auth.Unauthorized) as caught:
            auth.check_generic(headers, BODY, SECRET, now=NOW, window_s=300)
        assert caught.value.reason == "stale_timestamp"


def test_generic_signature_covers_timestamp_and_body() -> None:
    now = time.time()
    headers = _lower(auth.sign_generic("s3cret", BODY, int(now)))
    headers["x-timestamp"] = str(int(now) + 1)  # moved timestamp: signature no longer matches
    with pytest.raises(auth.Unauthorized):
        auth.check_generic(headers, BODY, SECRET, now=now, window_s=300)
    for broken in ({"x-signature": "sha256=zz"}, {"x-timestamp": "yesterday"}, {"x-signature": ""}):
        with pytest.raises(auth.Unauthorized):
            auth.check_generic(
                {**_lower(auth.sign_generic("s3cret", BODY, int(now))), **broken},
                BODY, SECRET, now=now, window_s=300,
            )  # fmt: skip
