-- Complete, then lease the same agent its next job, in one round trip and one commit: the
-- hand-off that keeps a hot lane busy. p_request names this request: a repeat (its reply
-- was lost) finds the job completed and gets back the lease it took.
--
-- The completed job's lane goes first to its next job when no other ready work of the
-- agent's queues ranks at least as high (the next job re-enters the ready order at now(),
-- behind everything already waiting, so that is exactly when a fair lease would pick it):
-- it is handed over directly, the lane staying `running`, without a round through `ready`.
-- The queue's counters change once (twice when the next job is of another queue).
CREATE FUNCTION transitions.complete_and_lease(p_id bigint, p_token bigint, p_result text,
    p_agent text, p_queues text[], p_request text,
    OUT o_outcome transition_outcome, OUT o_queue text, OUT o_run_ms float8,
    OUT o_next leased_job)
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
    h record;
    d_scheduled int := 0;
    d_ready int := 0;
    d_pending int := 0;
    d_running int := 0;
BEGIN
    -- Assigned, not `SELECT * INTO`: a plain expression skips an executor start and the
    -- tuplestore a set-returning call fills.
    c := transitions.completing(p_id, p_token, p_result);
    o_outcome := c.o_outcome;
    IF o_outcome <> 'done' THEN
        -- A repeat of a request that was answered finds its job already completed; it gets
        -- back the lease it took. Looked up only then: a first request (the job still held
        -- with p_token) cannot have leased yet, as completion and lease commit together.
        o_next := transitions.repeated(p_agent, p_request);
        IF o_next.id IS NOT NULL THEN
            o_outcome := 'repeated';
            RETURN;
        END IF;
    ELSE
        o_queue := (c.o_job).queue;
        o_run_ms := c.o_run_ms;
        d_running := -1;
        IF (c.o_job).lane_key IS NOT NULL THEN
            h := transitions.hand_over(o_queue, (c.o_job).lane_key, c.o_lane, c.o_queued,
                p_agent, p_queues, p_request);
            o_next := h.o_next;
            d_scheduled := h.d_scheduled;
            d_ready := h.d_ready;
            d_pending := -h.d_scheduled;
            IF o_next.id IS NOT NULL THEN
                d_pending := d_pending - 1;
                d_running := 0;
            END IF;
        END IF;
    END IF;
    IF o_outcome IN ('done', 'repeated') AND o_next.id IS NULL THEN
        o_next := transitions.take(p_agent, p_queues, p_request);
        IF o_next.id IS NOT NULL AND o_next.queue = o_queue THEN
            d_pending := d_pending - 1;
            d_ready := d_ready - 1;
            d_running := d_running + 1;
        ELSIF o_next.id IS NOT NULL AND o_outcome = 'done' AND o_next.queue < o_queue THEN
            -- Counter rows are taken in queue order (no deadlock between two transitions).
            PERFORM transitions.count_taken(o_next);
        ELSIF o_next.id IS NOT NULL AND o_outcome = 'repeated' THEN
            PERFORM transitions.count_taken(o_next);
        END IF;
    END IF;
    IF o_outcome = 'done' THEN
        PERFORM transitions.count(o_queue, p_running => d_running, p_completed => 1,
            p_scheduled => d_scheduled, p_pending => d_pending, p_ready => d_ready);
        IF o_next.id IS NOT NULL AND o_next.queue > o_queue THEN
            PERFORM transitions.count_taken(o_next);
        END IF;
    END IF;
END
$fn$;

-- The lane (locked, its head just finished) hands its next job to p_agent when that job is
-- due, its queue served by the agent and able to start one more, and no ready work of the
-- agent's queues has a priority as high; otherwise it advances as usual and nothing is
-- handed over. Returns the job handed over (if any) and how the lane's counts changed
-- (lane_delta): the caller counts.
--
-- A generic plan for every statement: the guard below (`p_queue = ANY(p_queues)` and the two
-- NOT EXISTS probes) otherwise got a custom plan on every call, 0.3 ms of planning per
-- hand-off (pg_stat_statements: 20,017 plans for 20,000 calls); its generic plan is the same
-- index probes.
CREATE FUNCTION transitions.hand_over(p_queue text, p_lane text, p_state lane_state,
    p_queued int, p_agent text, p_queues text[], p_request text,
    OUT o_next leased_job, OUT d_scheduled int, OUT d_ready int)
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    v_next record;
    q queues;
    d record;
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
            o_next := transitions.grant(v_next.id, p_agent, p_request, q);
            d_scheduled := 0;
            d_ready := 0;
            RETURN;
        END IF;
    END IF;
    d := transitions.lane_delta(p_state, transitions.advance_to(p_queue, p_lane, p_queued,
        v_next.id, v_next.priority, v_next.run_at));
    d_scheduled := d.d_scheduled;
    d_ready := d.d_ready;
END
$fn$;
