-- Heartbeat: extends the lease of a running job held with p_token and records its progress
-- (NULL leaves a value as it is). Says whether a client asked to cancel it.
CREATE FUNCTION transitions.heartbeat(p_id bigint, p_token bigint, p_percent int,
    p_message text, OUT o_outcome transition_outcome, OUT o_cancel_requested boolean,
    OUT o_expires_at timestamptz)
LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE jobs j SET lease_expires_at = now() + q.lease_ttl_ms * interval '1 millisecond',
        progress_percent = coalesce(p_percent, j.progress_percent),
        progress_message = coalesce(p_message, j.progress_message)
    FROM queues q
    WHERE j.id = p_id AND j.lease_token = p_token AND j.state = 'running' AND q.name = j.queue
    RETURNING j.cancel_requested, j.lease_expires_at INTO o_cancel_requested, o_expires_at;
    o_outcome := CASE WHEN o_expires_at IS NULL
                      THEN transitions.unmatched(p_id, p_token, '{}') ELSE 'done' END;
END
$fn$;

-- Why a statement guarded by (id, lease_token, state) matched nothing: the same holder
-- already took the job to one of p_after (a repeated report: 'repeated'), the token no
-- longer holds it ('stale'), or there is no such job ('missing').
CREATE FUNCTION transitions.unmatched(p_id bigint, p_token bigint, p_after job_state[])
RETURNS transition_outcome LANGUAGE plpgsql AS $fn$
DECLARE
    v_token bigint;
    v_state job_state;
BEGIN
    SELECT lease_token, state INTO v_token, v_state FROM jobs WHERE id = p_id;
    RETURN CASE WHEN v_state IS NULL THEN 'missing'
                WHEN v_token = p_token AND v_state = ANY(p_after) THEN 'repeated'
                ELSE 'stale' END;
END
$fn$;
