"""Property-based fuzzing of every endpoint over HTTP: nothing a client sends yields a 5xx.

Bodies are correctly signed, so the fuzzing reaches the parsers, the routing and the database
(not only the authentication): arbitrary bytes, arbitrary JSON, and real fixtures with one node
replaced by arbitrary JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from intake_harness import IntakeProcess, Sender, fixture_payload

pytestmark = [
    pytest.mark.integration,
    # background threads of this test process (Prefect's log and event workers, started by
    # earlier tests on the same xdist worker) may touch the global `random` while Hypothesis
    # draws; Hypothesis then blames the strategy with a warning (an error under -W error)
    pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning"),
]

SEND = Sender()
SOURCES = ["alertmanager", "grafana", "sentry", "pagerduty", "generic"]
FIXTURES = {
    "alertmanager": ["alertmanager_firing", "alertmanager_truncated"],
    "grafana": ["grafana_firing", "grafana_resolved"],
    "sentry": ["sentry_metric_alert", "sentry_event_alert", "sentry_issue"],
    "pagerduty": ["pagerduty_incident_triggered", "pagerduty_incident_resolved"],
    "generic": ["generic_firing", "generic_unmatched"],
}
FUZZ = settings(
    max_examples=int(os.environ.get("INTAKE_FUZZ_EXAMPLES", "250")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["firing", "resolved", "0001-01-01T00:00:00Z", "critical", ""]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=16,
)
resources = st.sampled_from(["metric_alert", "event_alert", "issue", "installation", "", "é"])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*prefix, i))


@st.composite
def mutated_fixture(draw: st.DrawFn, source: str) -> Any:
    payload = fixture_payload(draw(st.sampled_from(FIXTURES[source])))
    path = draw(st.sampled_from(list(_paths(payload))))
    value = draw(json_values)
    if not path:
        return value
    node: Any = payload
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return payload


@pytest.fixture
def http(intake_server: IntakeProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=intake_server.url, timeout=30) as client:
        yield client


def _send(
    http: httpx.Client, source: str, body: bytes, resource: str, content_type: str
) -> httpx.Response:
    headers: dict[str, Any] = SEND.headers(source, body, {"Content-Type": content_type})
    if resource:
        headers["Sentry-Hook-Resource"] = resource.encode("latin-1")  # raw header bytes
    response = http.post(f"/alerts/{source}", content=body, headers=headers)
    assert response.status_code < 500, (response.status_code, response.text, body[:300])
    assert "Traceback" not in response.text
    if response.status_code != 202:
        assert list(response.json()) == ["error"]
        assert "\n" not in response.text
    return response


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    data=st.data(),
    resource=resources,
)
def test_fuzz_no_5xx(http: httpx.Client, source: str, data: st.DataObject, resource: str) -> None:
    """Real payloads with one node replaced by arbitrary JSON, correctly signed."""
    payload = data.draw(mutated_fixture(source))
    body = json.dumps(payload).encode()
    response = _send(http, source, body, resource, "application/json")
    assert response.status_code in {202, 422}


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    payload=json_values,
    resource=resources,
)
def test_fuzz_arbitrary_json_no_5xx(
    http: httpx.Client, source: str, payload: Any, resource: str
) -> None:
    response = _send(http, source, json.dumps(payload).encode(), resource, "application/json")
    assert response.status_code in {202, 422}


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    body=st.binary(max_size=300),
    content_type=st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "text/plain", "", "x/y+json"]
    ),
    resource=resources,
)
def test_fuzz_arbitrary_bytes_no_5xx(
    http: httpx.Client, source: str, body: bytes, content_type: str, resource: str
) -> None:
    response = _send(http, source, body, resource, content_type)
    assert response.status_code in {202, 400, 415, 422}


@FUZZ
@given(
    source=st.sampled_from(SOURCES),
    headers=st.dictionaries(
        st.sampled_from(
            [
                "Authorization",
                "X-Signature",
                "X-Timestamp",
                "X-Grafana-Alerting-Signature",
                "X-Grafana-Alert-Signature",
                "Sentry-Hook-Signature",
                "X-PagerDuty-Signature",
                "Content-Length",
            ]
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80).map(
            str.strip  # h11 (the client) refuses surrounding whitespace itself
        ),
        max_size=4,
    ),
)
def test_fuzz_forged_credentials_are_401_never_5xx(
    http: httpx.Client, source: str, headers: dict[str, str]
) -> None:
    body = json.dumps(fixture_payload(FIXTURES[source][0])).encode()
    headers = {"Content-Type": "application/json", **headers}
    if "Content-Length" in headers:
        headers["Content-Length"] = str(len(body))  # a lying length is an HTTP-level error
    response = http.post(f"/alerts/{source}", content=body, headers=headers)
    assert response.status_code == 401, response.text
