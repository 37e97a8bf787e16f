-- The key-metrics watch's memory: one sample per run and environment (the values, their levels
-- and the alert the run raised), so the next run shows a trend and resolves an alert whose breach
-- has ended. Kept for a week (each run deletes older rows).
CREATE TABLE IF NOT EXISTS runbook.metric_samples (
    id          bigserial PRIMARY KEY,
    environment text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    metrics     jsonb NOT NULL,
    levels      jsonb NOT NULL,
    alert       jsonb
);

CREATE INDEX IF NOT EXISTS metric_samples_latest ON runbook.metric_samples (environment, id DESC);
CREATE INDEX IF NOT EXISTS metric_samples_at ON runbook.metric_samples (at);
