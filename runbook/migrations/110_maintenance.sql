-- Maintenance windows are written by the maintenance flows only (runbook/maintenance.py): who
-- opened one, for which incident, and when it was closed (a window ends early once service is
-- restored: `ends_at` is moved back to the moment it closed, so the intake stops suppressing).
ALTER TABLE runbook.maintenance_windows
    ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'scheduled'
        CHECK (kind IN ('scheduled', 'emergency')),
    ADD COLUMN IF NOT EXISTS flow_run_id text,
    ADD COLUMN IF NOT EXISTS incident_id text,
    ADD COLUMN IF NOT EXISTS closed_at timestamptz;

-- The 48-hour notice of one scheduled window: the customer status page entry it created, the
-- updates it announced (the plan), and the approval given for them at notice time (one scope per
-- step, bound to its exact action, target and parameters).
CREATE TABLE IF NOT EXISTS runbook.maintenance_notices (
    window_start    timestamptz PRIMARY KEY,
    window_end      timestamptz NOT NULL,
    noticed_at      timestamptz NOT NULL DEFAULT now(),
    flow_run_id     text,
    status_incident text,
    plan            jsonb NOT NULL DEFAULT '[]',
    notified_at     timestamptz,
    approved_scopes text[] NOT NULL DEFAULT '{}',
    approved_by     text[] NOT NULL DEFAULT '{}',
    approved_at     timestamptz,
    -- each approved scope acts at most once: a second run in the same window asks again
    consumed_scopes text[] NOT NULL DEFAULT '{}',
    CHECK (window_end > window_start)
);
