-- Trust: approvals bound to the exact act and fresh; the kill switch; the notification outbox.
-- An approval recorded in the ledger carries what it approved (action|hash of target+params)
-- and when; it is reused only for the identical scope and while fresh (Policy approval_valid_s).
ALTER TABLE runbook.actions ADD COLUMN IF NOT EXISTS approved_scope text;
ALTER TABLE runbook.actions ADD COLUMN IF NOT EXISTS approved_at timestamptz;
-- new ledger status: held (the kill switch was on when the act was about to run)

-- `runbook pause [--target T]`: '*' holds every act; read by every act right before it runs.
CREATE TABLE IF NOT EXISTS runbook.pauses (
    target     text PRIMARY KEY,
    reason     text NOT NULL,
    paused_by  text NOT NULL,
    paused_at  timestamptz NOT NULL DEFAULT now()
);

-- Every Slack message and PagerDuty page a flow sends: written before the first attempt, retried
-- (bounded) by `runbook serve` / `runbook sweep` until sent, so a sender restart loses none.
-- Channels are names (slack, pagerduty), never webhook URLs; one-time codes are never stored.
CREATE TABLE IF NOT EXISTS runbook.notifications (
    id              bigserial PRIMARY KEY,
    channel         text NOT NULL,              -- slack | pagerduty
    dedup_key       text,
    body            text NOT NULL,
    details         jsonb NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'pending',  -- pending | sent | failed
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX IF NOT EXISTS notifications_due ON runbook.notifications (next_attempt_at)
    WHERE status = 'pending';
