-- Alert intake: incidents, the alert inbox, the dispatch outbox, maintenance windows.
--
-- One open (or suppressed) incident per (route, target, group_key): a partial unique index makes
-- coalescing safe across any number of intake processes. `runbook.intake_record` does the whole
-- open / coalesce / reopen / resolve / suppress decision in one round trip and one transaction,
-- so an alert is persisted, and its dispatch queued, before intake answers 2xx.

CREATE TABLE runbook.incidents (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    route           text NOT NULL,
    flow            text,
    target          text NOT NULL,
    group_key       text NOT NULL,
    status          text NOT NULL CHECK (status IN ('open', 'suppressed', 'resolved')),
    severity        text NOT NULL,
    title           text NOT NULL,
    summary         text NOT NULL,
    labels          jsonb NOT NULL DEFAULT '{}',
    annotations     jsonb NOT NULL DEFAULT '{}',
    sources         text[] NOT NULL,
    alert_count     integer NOT NULL DEFAULT 1,
    duplicate_count integer NOT NULL DEFAULT 0,
    resolved_count  integer NOT NULL DEFAULT 0,
    reopen_count    integer NOT NULL DEFAULT 0,
    maintenance_window_id bigint,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    last_alert_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at     timestamptz,
    resolved_by     text
);

CREATE UNIQUE INDEX incidents_one_active_per_key
    ON runbook.incidents (route, target, group_key) WHERE status IN ('open', 'suppressed');
CREATE INDEX incidents_recently_resolved
    ON runbook.incidents (route, target, group_key, resolved_at DESC) WHERE status = 'resolved';

CREATE TABLE runbook.alerts (
    id           bigserial PRIMARY KEY,
    incident_id  uuid REFERENCES runbook.incidents (id),
    received_at  timestamptz NOT NULL DEFAULT now(),
    source       text NOT NULL,
    name         text NOT NULL,
    status       text NOT NULL,
    severity     text NOT NULL,
    summary      text NOT NULL,
    labels       jsonb NOT NULL DEFAULT '{}',
    fingerprint  text NOT NULL DEFAULT '',
    delivery_id  text,
    starts_at    timestamptz,
    outcome      text
);

CREATE UNIQUE INDEX alerts_one_per_delivery
    ON runbook.alerts (source, delivery_id) WHERE delivery_id IS NOT NULL;
CREATE INDEX alerts_by_incident ON runbook.alerts (incident_id);

-- What intake still has to do for an incident: start its flow run, notify Slack.
CREATE TABLE runbook.outbox (
    incident_id     uuid NOT NULL REFERENCES runbook.incidents (id),
    action          text NOT NULL CHECK (action IN ('flow', 'slack')),
    target          text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    result          text,
    last_error      text,
    PRIMARY KEY (incident_id, action)
);

CREATE INDEX outbox_pending ON runbook.outbox (next_attempt_at) WHERE done_at IS NULL;

-- Written by the maintenance flow; `routes` NULL means every route.
CREATE TABLE IF NOT EXISTS runbook.maintenance_windows (
    id         bigserial PRIMARY KEY,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    reason     text NOT NULL DEFAULT '',
    routes     text[],
    CHECK (ends_at > starts_at)
);

CREATE INDEX maintenance_windows_ends ON runbook.maintenance_windows (ends_at);

CREATE FUNCTION runbook.severity_rank(s text) RETURNS integer
    LANGUAGE sql IMMUTABLE
    AS $$ SELECT coalesce(array_position(ARRAY['info', 'warning', 'error', 'critical'], s), 1) $$;

-- Record one alert. Returns the incident it belongs to, what happened, and the incident's count
-- of firing alerts. Outcomes: new, coalesced, reopened, suppressed, resolved, duplicate.
CREATE FUNCTION runbook.intake_record(
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
        UPDATE runbook.incidents i
           SET status = 'resolved', resolved_at = now(), resolved_by = p_source,
               resolved_count = i.resolved_count + 1, last_alert_at = now()
         WHERE i.route = p_route AND i.target = p_target AND i.group_key = p_group
           AND i.status IN ('open', 'suppressed')
        RETURNING i.id, i.alert_count INTO v_id, v_count;
        IF FOUND THEN
            -- resolved before its flow run was created: never start the remediation
            UPDATE runbook.outbox o SET done_at = now(), result = 'cancelled'
             WHERE o.incident_id = v_id AND o.action = 'flow' AND o.done_at IS NULL;
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
                        -- a dispatch cancelled by the resolution is due again
                        UPDATE runbook.outbox o SET done_at = NULL, result = NULL
                         WHERE o.incident_id = v_id AND o.result = 'cancelled'
                           AND v_new = 'open';
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
