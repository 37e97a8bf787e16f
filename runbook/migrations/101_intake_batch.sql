-- Record many alerts in one statement (one round trip, one transaction, one commit): intake
-- groups the deliveries that arrive while a commit is in flight. Records are handled in
-- (route, target, group_key) order, so concurrent batches lock incidents in one global order
-- and cannot deadlock on them. Returns one row per record, by its 1-based position.
CREATE FUNCTION runbook.intake_record_batch(p_records jsonb, p_cooldown_s double precision)
RETURNS TABLE (ord integer, incident_id uuid, outcome text, alert_count integer)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v record;
BEGIN
    FOR r IN
        SELECT e.value AS rec, e.ordinality::integer AS n
          FROM jsonb_array_elements(p_records) WITH ORDINALITY AS e
         ORDER BY e.value ->> 'route', e.value ->> 'target', e.value ->> 'group', e.ordinality
    LOOP
        SELECT * INTO v FROM runbook.intake_record(
            r.rec ->> 'route', r.rec ->> 'flow', r.rec ->> 'target', r.rec ->> 'group',
            (r.rec ->> 'suppressible')::boolean,
            ARRAY(SELECT jsonb_array_elements_text(r.rec -> 'actions')),
            ARRAY(SELECT jsonb_array_elements_text(r.rec -> 'action_targets')),
            p_cooldown_s,
            r.rec ->> 'source', r.rec ->> 'name', r.rec ->> 'status', r.rec ->> 'severity',
            r.rec ->> 'summary', r.rec -> 'labels', r.rec -> 'annotations',
            r.rec ->> 'fingerprint', r.rec ->> 'delivery_id',
            (r.rec ->> 'starts_at')::timestamptz
        );
        ord := r.n;
        incident_id := v.incident_id;
        outcome := v.outcome;
        alert_count := v.alert_count;
        RETURN NEXT;
    END LOOP;
END
$$;
