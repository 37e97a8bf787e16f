-- Safety core: the action ledger (exactly-once), its event trail (the incident timeline) and
-- approvals (what waits for whom).
CREATE TABLE IF NOT EXISTS runbook.actions (
    idempotency_key text PRIMARY KEY,           -- incident:action:target
    incident_id     text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL,
    action_class    text NOT NULL,              -- read | safe | destructive
    params          jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL,              -- planned | started | done | failed | rejected
                                                -- | skipped | undone | refused
    dry_run         boolean NOT NULL DEFAULT false,
    flow_run_id     text,
    approvers       text[] NOT NULL DEFAULT '{}',
    outcome         jsonb,
    verified        boolean,
    attempts        integer NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS actions_incident ON runbook.actions (incident_id);
CREATE INDEX IF NOT EXISTS actions_target_done ON runbook.actions (target, action_class, updated_at)
    WHERE status = 'done';

CREATE TABLE IF NOT EXISTS runbook.action_events (
    id              bigserial PRIMARY KEY,
    incident_id     text NOT NULL,
    idempotency_key text,
    at              timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL,              -- seen | decided | approval | done | verified ...
    summary         text NOT NULL,
    detail          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS action_events_incident ON runbook.action_events (incident_id, id);

CREATE TABLE IF NOT EXISTS runbook.approvals (
    flow_run_id     text PRIMARY KEY,           -- the paused approval-gate run
    idempotency_key text NOT NULL,
    incident_id     text NOT NULL,
    action          text NOT NULL,
    target          text NOT NULL,
    summary         text NOT NULL,
    ui_url          text,
    status          text NOT NULL,              -- waiting | approved | rejected | timed_out
    approver        text,
    reason          text,
    requested_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    decided_at      timestamptz
);
CREATE INDEX IF NOT EXISTS approvals_waiting ON runbook.approvals (status) WHERE status = 'waiting';
