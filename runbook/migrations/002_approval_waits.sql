-- Approvals of runs that suspend (a deployment run frees its process while it waits): one run
-- can wait at several approval points, so a row is (run, pause key). `mode` says how the run
-- waits: 'pause' (the approval-gate subflow holds its process) or 'suspend' (the run has exited
-- and is rerun after the answer; the approval sweeper answers "timed out" when nobody does).
-- New status: withdrawn (the rerun re-checked and finished without needing the approval).
ALTER TABLE runbook.approvals ADD COLUMN IF NOT EXISTS pause_key text NOT NULL DEFAULT 'gate';
ALTER TABLE runbook.approvals ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'pause';
ALTER TABLE runbook.approvals ADD COLUMN IF NOT EXISTS swept_at timestamptz;
ALTER TABLE runbook.approvals DROP CONSTRAINT IF EXISTS approvals_pkey;
ALTER TABLE runbook.approvals ADD PRIMARY KEY (flow_run_id, pause_key);
CREATE INDEX IF NOT EXISTS approvals_expiring ON runbook.approvals (expires_at)
    WHERE status = 'waiting' AND mode = 'suspend';
