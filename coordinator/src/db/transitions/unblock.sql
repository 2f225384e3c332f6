-- Unblock (an operator): a lane stopped by its failed head (`block` policy) moves on to its
-- next job; the failed job stays failed (retry or cancel it to act on it instead). Returns
-- the failed job's id; 'refused' when the lane is not blocked, 'missing' when it has no row.
CREATE FUNCTION transitions.unblock(p_queue text, p_lane text,
    OUT o_outcome transition_outcome, OUT o_failed_job bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_state lane_state;
BEGIN
    SELECT state, head_job_id INTO v_state, o_failed_job FROM lanes
    WHERE queue = p_queue AND lane_key = p_lane FOR UPDATE;
    IF v_state IS NULL THEN
        o_outcome := 'missing';
    ELSIF v_state <> 'blocked' THEN
        o_outcome := 'refused';
        o_failed_job := NULL;
    ELSE
        PERFORM transitions.relink(p_queue, p_lane, 0, p_unblock => true);
        o_outcome := 'done';
    END IF;
END
$fn$;
