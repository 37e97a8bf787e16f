"""Alert intake: authenticate → parse → route → coalesce + persist → 202 → dispatch.

`runbook intake [--host 127.0.0.1] [--port 8080]` serves it (uvicorn, one process; run several
copies behind a load balancer: all state is in Postgres). Modules:

    app.py          the ASGI app (`create_app(settings=None)`), the request pipeline
    auth.py         per-source authentication, pure (constant-time compares, replay window)
    payloads.py     the five wire formats (pydantic); parsers.py turns them into `Alert`s
    routes.py       the routing table (`routes.yaml`, or an `IntakeRoutes` block) → placement
    persister.py    group commit: concurrent deliveries persisted in one statement
    dispatcher.py   the outbox → `run_deployment(timeout=0, idempotency_key=<incident id>)`;
                    a flow with no deployment is finished, triaged to Slack and paged
    notices.py      the Slack message (alert text escaped) and the PagerDuty page
    metrics.py      Prometheus metrics; settings.py the `RUNBOOK_*` settings; cli.py the command

Endpoints: `POST /alerts/{alertmanager,grafana,sentry,pagerduty,generic}`, `GET /healthz`,
`GET /metrics`. Answers: 202 `{"incident", "status": new|coalesced|resolved|suppressed|triaged,
"outcome", "route", "target", "alert", "alert_count", "alerts": [...]}` (or status `ignored` for a
delivery that carries no alert), 400 malformed JSON or a value the database refuses (named;
the other deliveries committed with it are not affected), 401 credentials, 413 too large, 415
not JSON, 422 wrong shape naming the field, 503 + `Retry-After` only when the alert cannot be
persisted. Start-up refuses a routing table whose routes name a flow not in
`routes.KNOWN_FLOWS` (one line, exit 1). Incidents themselves live in `runbook.incidents` (the
flows read them with `get_incident`); a resolved alert closes one only when its fingerprint
fired into it and nothing else its source reported there still fires (migration 102).
"""

PROJECT = "runbook-remediation"  # `runbook` checks it: not another distribution's intake
