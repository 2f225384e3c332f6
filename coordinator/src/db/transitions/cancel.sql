-- Cancel (a client): a scheduled or pending job ends `cancelled` at once (its lane advances
-- if it was the head); a running one is flagged, and ends `cancelled` when its agent sees
-- the flag on its next heartbeat and reports (transitions.fail); a failed one ends
-- `cancelled` too, which frees a lane it blocked. A finished job is 'refused'.
CREATE FUNCTION transitions.cancel(p_id bigint,
    OUT o_outcome transition_outcome, OUT o_job job_view)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_lane lanes%ROWTYPE;
    j jobs;
    v_was job_state;
BEGIN
    SELECT l.* INTO v_lane
    FROM jobs jj JOIN lanes l ON l.queue = jj.queue AND l.lane_key = jj.lane_key
    WHERE jj.id = p_id FOR UPDATE OF l;
    SELECT * INTO j FROM jobs WHERE id = p_id FOR UPDATE;
    IF j.id IS NULL THEN
        o_outcome := 'missing';
        RETURN;
    END IF;
    v_was := j.state;
    IF v_was = 'running' THEN
        UPDATE jobs SET cancel_requested = true WHERE id = p_id RETURNING * INTO j;
    ELSIF v_was IN ('scheduled', 'pending', 'failed') THEN
        UPDATE jobs SET state = 'cancelled', finished_at = coalesce(finished_at, now()),
            lease_expires_at = NULL
        WHERE id = p_id RETURNING * INTO j;
        PERFORM transitions.finished(j);
        PERFORM transitions.count(j.queue, p_cancelled => 1,
            p_scheduled => -(v_was = 'scheduled')::int, p_pending => -(v_was = 'pending')::int,
            p_failed => -(v_was = 'failed')::int,
            p_ready => -(v_was = 'pending' AND j.lane_key IS NULL)::int);
        IF j.lane_key IS NOT NULL AND v_lane.head_job_id = p_id AND v_was = 'pending' THEN
            PERFORM transitions.count_lane(j.queue, v_lane.state,
                transitions.advance(j.queue, j.lane_key, v_lane.queued));
        ELSIF j.lane_key IS NOT NULL AND v_was = 'pending' THEN
            UPDATE lanes SET queued = queued - 1 WHERE queue = j.queue AND lane_key = j.lane_key;
        ELSIF j.lane_key IS NOT NULL AND v_lane.head_job_id = p_id THEN
            -- The failed head of a blocked lane: the lane moves on.
            PERFORM transitions.relink(j.queue, j.lane_key, 0);
        END IF;
    ELSE
        o_outcome := 'refused';
        o_job := transitions.view(j);
        RETURN;
    END IF;
    o_outcome := 'done';
    o_job := transitions.view(j);
END
$fn$;
