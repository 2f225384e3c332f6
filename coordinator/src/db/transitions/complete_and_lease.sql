-- Complete, then lease the same agent its next job, in one round trip and one commit: the
-- hand-off that keeps a hot lane busy. p_request names this request: a repeat (its reply
-- was lost) finds the job completed and gets back the lease it took.
--
-- The completed job's lane goes first to its next job when no other ready work of the
-- agent's queues ranks at least as high (the next job re-enters the ready order at now(),
-- behind everything already waiting, so that is exactly when a fair lease would pick it):
-- it is handed over directly, the lane staying `running`, without a round through `ready`.
CREATE FUNCTION transitions.complete_and_lease(p_id bigint, p_token bigint, p_result text,
    p_agent text, p_queues text[], p_request text,
    OUT o_outcome transition_outcome, OUT o_queue text, OUT o_run_ms float8,
    OUT o_next leased_job)
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
BEGIN
    o_next := transitions.repeated(p_agent, p_request);
    IF o_next.id IS NOT NULL THEN
        o_outcome := 'repeated';
        RETURN;
    END IF;
    SELECT * INTO c FROM transitions.completing(p_id, p_token, p_result);
    o_outcome := c.o_outcome;
    IF o_outcome = 'done' THEN
        o_queue := (c.o_job).queue;
        o_run_ms := c.o_run_ms;
        IF (c.o_job).lane_key IS NOT NULL THEN
            o_next := transitions.hand_over(o_queue, (c.o_job).lane_key, c.o_lane, c.o_queued,
                                            p_agent, p_queues, p_request);
        END IF;
    END IF;
    IF o_outcome IN ('done', 'repeated') AND o_next.id IS NULL THEN
        o_next := transitions.take(p_agent, p_queues, p_request);
    END IF;
END
$fn$;

-- The lane (locked, its head just finished) hands its next job to p_agent when that job is
-- due, its queue served by the agent and able to start one more, and no ready work of the
-- agent's queues has a priority as high; otherwise it advances as usual and nothing is
-- handed over (NULL).
CREATE FUNCTION transitions.hand_over(p_queue text, p_lane text, p_state lane_state,
    p_queued int, p_agent text, p_queues text[], p_request text)
RETURNS leased_job LANGUAGE plpgsql AS $fn$
DECLARE
    v_next record;
    q queues;
BEGIN
    SELECT id, priority, run_at INTO v_next FROM jobs
    WHERE queue = p_queue AND lane_key = p_lane AND state = 'pending'
    ORDER BY id LIMIT 1;
    IF v_next.id IS NOT NULL AND v_next.run_at <= now() AND p_queue = ANY(p_queues)
       AND NOT EXISTS (SELECT 1 FROM lanes WHERE queue = ANY(p_queues) AND state = 'ready'
                       AND priority >= v_next.priority)
       AND NOT EXISTS (SELECT 1 FROM jobs WHERE queue = ANY(p_queues) AND state = 'pending'
                       AND lane_key IS NULL AND priority >= v_next.priority) THEN
        SELECT * INTO q FROM queues WHERE name = p_queue;
        IF transitions.has_room(q) THEN
            UPDATE lanes SET head_job_id = v_next.id, priority = v_next.priority,
                ready_at = now(), queued = queued - 1
            WHERE queue = p_queue AND lane_key = p_lane;
            RETURN transitions.grant(v_next.id, p_agent, p_request, q, 0);
        END IF;
    END IF;
    PERFORM transitions.advance(p_queue, p_lane, p_state, p_queued);
    RETURN NULL;
END
$fn$;
