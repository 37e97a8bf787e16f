-- A flap after the remediation ran: an incident resolved less than the cool-down ago fires again
-- and is reopened (intake_record_alert, "no second run"). If its flow run already happened (the
-- `flow` outbox row is done and was not cancelled by the resolution), nothing else would tell
-- anyone the problem is back: queue a Slack triage message and a page for it, durably, in the
-- same transaction as the reopen. (A dispatch the resolution cancelled is re-armed by the
-- function itself and runs the flow; no message is needed for that.)
CREATE OR REPLACE FUNCTION runbook.tell_human_on_reopen() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM runbook.outbox o
                WHERE o.incident_id = NEW.id AND o.action = 'flow'
                  AND o.done_at IS NOT NULL AND o.result IS DISTINCT FROM 'cancelled') THEN
        INSERT INTO runbook.outbox (incident_id, action, target)
        VALUES (NEW.id, 'slack', 'reopened #' || NEW.reopen_count
                    || ' within the cool-down after its flow run had finished'),
               (NEW.id, 'page', 'reopened #' || NEW.reopen_count
                    || ' within the cool-down after its flow run had finished')
        ON CONFLICT (incident_id, action) DO UPDATE SET target = EXCLUDED.target,
            created_at = now(), attempts = 0, next_attempt_at = now(), done_at = NULL,
            result = NULL, last_error = NULL;
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS incidents_reopened ON runbook.incidents;
CREATE TRIGGER incidents_reopened
    AFTER UPDATE OF reopen_count ON runbook.incidents
    FOR EACH ROW
    WHEN (NEW.reopen_count > OLD.reopen_count AND NEW.status = 'open')
    EXECUTE FUNCTION runbook.tell_human_on_reopen();
