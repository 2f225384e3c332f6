-- Expire (the reaper): every running job whose lease lapsed (its agent died or lost the
-- network) ends its attempt as transitions.fail decides for an expiry: back to its lane's
-- head after the backoff, or failed when no attempt is left. At most p_limit per call,
-- oldest lapse first. Several replicas may reap at once: the token guard and the expiry
-- re-check under the job's lock let one of them win. A job that cannot be expired (an
-- error) is reported and skipped, never left to stop the others.
CREATE FUNCTION transitions.expire(p_limit int)
RETURNS TABLE (o_id bigint, o_queue text, o_lane text, o_agent text, o_traceparent text,
               o_state job_state)
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    f record;
BEGIN
    FOR r IN
        SELECT id, lease_token, agent_id, queue, lane_key, traceparent FROM jobs
        WHERE state = 'running' AND lease_expires_at < now()
        ORDER BY lease_expires_at LIMIT p_limit
    LOOP
        BEGIN
            SELECT * INTO f FROM transitions.fail(r.id, r.lease_token, 'expired',
                format('lease expired: agent %s stopped heartbeating', r.agent_id), NULL);
            IF f.o_outcome = 'done' THEN
                o_id := r.id;
                o_queue := r.queue;
                o_lane := r.lane_key;
                o_agent := r.agent_id;
                o_traceparent := r.traceparent;
                o_state := f.o_state;
                RETURN NEXT;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'lease of job % lapsed but could not be expired: % (%)',
                r.id, SQLERRM, SQLSTATE;
        END;
    END LOOP;
END
$fn$;
