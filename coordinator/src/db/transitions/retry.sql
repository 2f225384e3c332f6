-- Retry (an operator): a failed or cancelled job goes back to pending with its attempts
-- reset. In its lane it takes its place by id: before later waiting jobs, after a running
-- one; retrying the failed head of a blocked lane restarts the lane with it. Any other
-- state is 'refused'.
CREATE FUNCTION transitions.retry(p_id bigint,
    OUT o_outcome transition_outcome, OUT o_job job_view)
LANGUAGE plpgsql AS $fn$
DECLARE
    j jobs;
    v_was job_state;
BEGIN
    PERFORM 1 FROM jobs jj JOIN lanes l ON l.queue = jj.queue AND l.lane_key = jj.lane_key
    WHERE jj.id = p_id FOR UPDATE OF l;
    SELECT * INTO j FROM jobs WHERE id = p_id FOR UPDATE;
    IF j.id IS NULL THEN
        o_outcome := 'missing';
        RETURN;
    ELSIF j.state NOT IN ('failed', 'cancelled') THEN
        o_outcome := 'refused';
        o_job := transitions.view(j);
        RETURN;
    END IF;
    v_was := j.state;
    UPDATE jobs SET state = 'pending', attempt = 0, run_at = now(), finished_at = NULL,
        cancel_requested = false, result = NULL, progress_percent = NULL,
        progress_message = NULL, lease_expires_at = NULL
    WHERE id = p_id RETURNING * INTO j;
    PERFORM transitions.count(j.queue, p_pending => 1,
        p_failed => -(v_was = 'failed')::int, p_cancelled => -(v_was = 'cancelled')::int,
        p_ready => (j.lane_key IS NULL)::int);
    IF j.lane_key IS NOT NULL THEN
        PERFORM transitions.relink(j.queue, j.lane_key, 1);
    END IF;
    o_outcome := 'done';
    o_job := transitions.view(j);
END
$fn$;
