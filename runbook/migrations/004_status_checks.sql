-- Statuses are closed sets (runbook.ledger.LedgerStatus, runbook.approvals.ApprovalStatus,
-- WaitMode, runbook.actions.ActionClass): the database refuses anything else.
ALTER TABLE runbook.actions DROP CONSTRAINT IF EXISTS actions_status_check;
ALTER TABLE runbook.actions ADD CONSTRAINT actions_status_check CHECK (status IN (
    'intent', 'planned', 'approved', 'started', 'done', 'undone', 'failed', 'rejected',
    'refused', 'skipped', 'held'));
ALTER TABLE runbook.actions DROP CONSTRAINT IF EXISTS actions_action_class_check;
ALTER TABLE runbook.actions ADD CONSTRAINT actions_action_class_check CHECK (action_class IN (
    'read', 'safe', 'destructive'));
ALTER TABLE runbook.approvals DROP CONSTRAINT IF EXISTS approvals_status_check;
ALTER TABLE runbook.approvals ADD CONSTRAINT approvals_status_check CHECK (status IN (
    'waiting', 'approved', 'rejected', 'timed_out', 'withdrawn'));
ALTER TABLE runbook.approvals DROP CONSTRAINT IF EXISTS approvals_mode_check;
ALTER TABLE runbook.approvals ADD CONSTRAINT approvals_mode_check CHECK (mode IN (
    'pause', 'suspend'));
ALTER TABLE runbook.notifications DROP CONSTRAINT IF EXISTS notifications_status_check;
ALTER TABLE runbook.notifications ADD CONSTRAINT notifications_status_check CHECK (status IN (
    'pending', 'sent', 'failed'));
