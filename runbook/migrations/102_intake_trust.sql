-- Trust: resolutions scoped to fingerprints, a "page" outbox action, bounded identity keys.
--
-- A resolved alert used to close the open incident of its (route, target, group) key whatever it
-- was: one instance of a storm resolving closed the incident while the others still fired (and
-- cancelled its remediation), and a resolution of something that never fired there closed it
-- too. Now each incident remembers which (source, fingerprint) fired into it and whether it is
-- still firing. A resolved alert with a fingerprint closes the incident of its key only when that
-- fingerprint fired into it and nothing else its source reported there still fires; other
-- sources do not hold it open (not every source sends resolutions). A resolved alert without a
-- fingerprint closes by key, as before. A reopened incident starts a fresh set.
--
-- Outbox action "page": a PagerDuty page queued with a Slack triage message when an incident's
-- flow cannot start (no such deployment), so a restart loses neither.

-- An identity (fingerprint, delivery id) of at most 200 bytes, else its SHA-256: the same rule
-- as intake.parsers.bounded_id, so a key never exceeds an index entry's limit.
CREATE FUNCTION runbook.intake_id_key(p text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT
    AS $$ SELECT CASE WHEN octet_length(p) > 200
                      THEN 'sha256:' || encode(sha256(convert_to(p, 'UTF8')), 'hex')
                      ELSE p END $$;

ALTER TABLE runbook.outbox DROP CONSTRAINT IF EXISTS outbox_action_check;
ALTER TABLE runbook.outbox ADD CONSTRAINT outbox_action_check
    CHECK (action IN ('flow', 'slack', 'page'));

CREATE TABLE runbook.incident_fingerprints (
    incident_id uuid NOT NULL REFERENCES runbook.incidents (id),
    source      text NOT NULL,
    fingerprint text NOT NULL,
    firing      boolean NOT NULL,
    PRIMARY KEY (incident_id, source, fingerprint)
);

-- what the active incidents hold now: each identity's latest alert says whether it fires
INSERT INTO runbook.incident_fingerprints (incident_id, source, fingerprint, firing)
SELECT DISTINCT ON (a.incident_id, a.source, runbook.intake_id_key(a.fingerprint))
       a.incident_id, a.source, runbook.intake_id_key(a.fingerprint), a.status = 'firing'
  FROM runbook.alerts a JOIN runbook.incidents i ON i.id = a.incident_id
 WHERE i.status IN ('open', 'suppressed') AND a.fingerprint <> ''
 ORDER BY a.incident_id, a.source, runbook.intake_id_key(a.fingerprint), a.id DESC;

CREATE OR REPLACE FUNCTION runbook.intake_record(
    p_route text, p_flow text, p_target text, p_group text, p_suppressible boolean,
    p_actions text[], p_action_targets text[], p_cooldown_s double precision,
    p_source text, p_name text, p_status text, p_severity text, p_summary text,
    p_labels jsonb, p_annotations jsonb, p_fingerprint text, p_delivery_id text,
    p_starts_at timestamptz
) RETURNS TABLE (incident_id uuid, outcome text, alert_count integer)
LANGUAGE plpgsql AS $$
DECLARE
    v_alert   bigint;
    v_id      uuid;
    v_old     text;
    v_new     text := 'open';
    v_window  bigint;
    v_count   integer;
    v_outcome text;
    v_fp      text := runbook.intake_id_key(coalesce(p_fingerprint, ''));
    v_close   boolean;
BEGIN
    -- An exact redelivery (same source, same delivery id) only counts as a duplicate.
    IF p_delivery_id IS NOT NULL THEN
        INSERT INTO runbook.alerts AS a (source, name, status, severity, summary, labels,
                                         fingerprint, delivery_id, starts_at, outcome)
        VALUES (p_source, p_name, p_status, p_severity, p_summary, p_labels,
                p_fingerprint, p_delivery_id, p_starts_at, 'pending')
        ON CONFLICT (source, delivery_id) WHERE delivery_id IS NOT NULL DO NOTHING
        RETURNING a.id INTO v_alert;
        IF v_alert IS NULL THEN
            SELECT a.incident_id INTO v_id FROM runbook.alerts a
             WHERE a.source = p_source AND a.delivery_id = p_delivery_id;
            UPDATE runbook.incidents i SET duplicate_count = i.duplicate_count + 1
             WHERE i.id = v_id RETURNING i.alert_count INTO v_count;
            RETURN QUERY SELECT v_id, 'duplicate'::text, v_count;
            RETURN;
        END IF;
    END IF;

    IF p_status = 'resolved' THEN
        SELECT i.id INTO v_id FROM runbook.incidents i
         WHERE i.route = p_route AND i.target = p_target AND i.group_key = p_group
           AND i.status IN ('open', 'suppressed')
         FOR UPDATE;
        IF FOUND THEN
            IF v_fp <> '' THEN
                -- only a resolution of an alert that fired into this incident closes it, and
                -- only once nothing else its source reported there is still firing
                UPDATE runbook.incident_fingerprints f SET firing = false
                 WHERE f.incident_id = v_id AND f.source = p_source AND f.fingerprint = v_fp;
                v_close := FOUND AND NOT EXISTS (
                    SELECT 1 FROM runbook.incident_fingerprints f
                     WHERE f.incident_id = v_id AND f.source = p_source AND f.firing);
            ELSE
                v_close := true;  -- the alert has no identity: its key decides, as before
            END IF;
            UPDATE runbook.incidents i
               SET status = CASE WHEN v_close THEN 'resolved' ELSE i.status END,
                   resolved_at = CASE WHEN v_close THEN now() ELSE i.resolved_at END,
                   resolved_by = CASE WHEN v_close THEN p_source ELSE i.resolved_by END,
                   resolved_count = i.resolved_count + 1, last_alert_at = now()
             WHERE i.id = v_id RETURNING i.alert_count INTO v_count;
            IF v_close THEN
                -- resolved before its flow run was created: never start the remediation
                UPDATE runbook.outbox o SET done_at = now(), result = 'cancelled'
                 WHERE o.incident_id = v_id AND o.action = 'flow' AND o.done_at IS NULL;
            END IF;
        ELSE
            SELECT i.id INTO v_id FROM runbook.incidents i
             WHERE i.route = p_route AND i.target = p_target AND i.group_key = p_group
             ORDER BY i.opened_at DESC LIMIT 1;
            UPDATE runbook.incidents i SET resolved_count = i.resolved_count + 1
             WHERE i.id = v_id RETURNING i.alert_count INTO v_count;
        END IF;
        v_outcome := 'resolved';
    ELSE
        IF p_suppressible THEN
            SELECT w.id INTO v_window FROM runbook.maintenance_windows w
             WHERE w.starts_at <= now() AND w.ends_at > now()
               AND (w.routes IS NULL OR p_route = ANY (w.routes))
             ORDER BY w.ends_at DESC LIMIT 1;
            IF v_window IS NOT NULL THEN
                v_new := 'suppressed';
            END IF;
        END IF;

        LOOP
            -- 1. an active incident for the key: attach to it
            SELECT i.id, i.status INTO v_id, v_old FROM runbook.incidents i
             WHERE i.route = p_route AND i.target = p_target AND i.group_key = p_group
               AND i.status IN ('open', 'suppressed')
             FOR UPDATE;
            IF FOUND THEN
                UPDATE runbook.incidents i
                   SET alert_count = i.alert_count + 1, last_alert_at = now(),
                       sources = CASE WHEN p_source = ANY (i.sources) THEN i.sources
                                      ELSE i.sources || p_source END,
                       severity = CASE WHEN runbook.severity_rank(p_severity)
                                            > runbook.severity_rank(i.severity)
                                       THEN p_severity ELSE i.severity END,
                       status = CASE WHEN v_new = 'open' THEN 'open' ELSE i.status END,
                       maintenance_window_id = CASE WHEN v_new = 'open' THEN NULL
                                                    ELSE i.maintenance_window_id END
                 WHERE i.id = v_id RETURNING i.alert_count INTO v_count;
                IF v_old = 'suppressed' AND v_new = 'open' THEN
                    -- the problem outlived the maintenance window: remediate it now
                    INSERT INTO runbook.outbox (incident_id, action, target)
                    SELECT v_id, u.a, u.t FROM unnest(p_actions, p_action_targets) AS u (a, t)
                    ON CONFLICT DO NOTHING;
                    v_outcome := 'new';
                ELSIF v_old = 'suppressed' THEN
                    v_outcome := 'suppressed';
                ELSE
                    v_outcome := 'coalesced';
                END IF;
                EXIT;
            END IF;

            -- 2. resolved within the cool-down: a flap, reopen it (no second run)
            SELECT i.id INTO v_id FROM runbook.incidents i
             WHERE i.route = p_route AND i.target = p_target AND i.group_key = p_group
               AND i.status = 'resolved'
               AND i.resolved_at > now() - make_interval(secs => p_cooldown_s)
             ORDER BY i.resolved_at DESC LIMIT 1
             FOR UPDATE;
            IF FOUND THEN
                BEGIN
                    UPDATE runbook.incidents i
                       SET status = v_new, resolved_at = NULL, resolved_by = NULL,
                           reopen_count = i.reopen_count + 1,
                           alert_count = i.alert_count + 1, last_alert_at = now(),
                           maintenance_window_id = v_window
                     WHERE i.id = v_id AND i.status = 'resolved'
                    RETURNING i.alert_count INTO v_count;
                    IF FOUND THEN
                        -- a dispatch cancelled by the resolution is due again (a new dispatch)
                        UPDATE runbook.outbox o SET done_at = NULL, result = NULL,
                               created_at = now(), next_attempt_at = now()
                         WHERE o.incident_id = v_id AND o.result = 'cancelled'
                           AND v_new = 'open';
                        -- what fired before the resolution counts no more; what fires now does
                        UPDATE runbook.incident_fingerprints f SET firing = false
                         WHERE f.incident_id = v_id AND f.firing;
                        v_outcome := CASE WHEN v_new = 'open' THEN 'reopened'
                                          ELSE 'suppressed' END;
                        EXIT;
                    END IF;
                EXCEPTION WHEN unique_violation THEN
                    NULL;  -- another process opened a new incident meanwhile: coalesce into it
                END;
                CONTINUE;
            END IF;

            -- 3. open a new incident
            INSERT INTO runbook.incidents AS i (route, flow, target, group_key, status, severity,
                                                title, summary, labels, annotations, sources,
                                                maintenance_window_id)
            VALUES (p_route, p_flow, p_target, p_group, v_new, p_severity, p_name, p_summary,
                    p_labels, p_annotations, ARRAY[p_source], v_window)
            ON CONFLICT (route, target, group_key) WHERE status IN ('open', 'suppressed')
            DO NOTHING
            RETURNING i.id, i.alert_count INTO v_id, v_count;
            IF FOUND THEN
                IF v_new = 'open' THEN
                    INSERT INTO runbook.outbox (incident_id, action, target)
                    SELECT v_id, u.a, u.t FROM unnest(p_actions, p_action_targets) AS u (a, t);
                    v_outcome := 'new';
                ELSE
                    v_outcome := 'suppressed';
                END IF;
                EXIT;
            END IF;
            -- lost a race to another process: go round and coalesce
        END LOOP;

        IF v_fp <> '' THEN
            -- this identity fires into the incident (again)
            INSERT INTO runbook.incident_fingerprints AS f
                   (incident_id, source, fingerprint, firing)
            VALUES (v_id, p_source, v_fp, true)
            ON CONFLICT ON CONSTRAINT incident_fingerprints_pkey DO UPDATE SET firing = true
             WHERE NOT f.firing;
        END IF;
    END IF;

    IF v_alert IS NULL THEN
        INSERT INTO runbook.alerts (incident_id, source, name, status, severity, summary, labels,
                                    fingerprint, delivery_id, starts_at, outcome)
        VALUES (v_id, p_source, p_name, p_status, p_severity, p_summary, p_labels,
                p_fingerprint, p_delivery_id, p_starts_at, v_outcome);
    ELSE
        UPDATE runbook.alerts a SET incident_id = v_id, outcome = v_outcome WHERE a.id = v_alert;
    END IF;
    RETURN QUERY SELECT v_id, v_outcome, v_count;
END
$$;
