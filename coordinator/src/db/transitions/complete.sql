-- Complete: a running job held with p_token ends `completed` with p_result, its
-- job.completed callback is written in the same transaction, and its lane advances to its
-- next job. A repeat by the same holder (its reply was lost) is 'repeated' and changes
-- nothing. Returns the queue and run time of a job completed now, for the metrics.
CREATE FUNCTION transitions.complete(p_id bigint, p_token bigint, p_result text,
    OUT o_outcome transition_outcome, OUT o_queue text, OUT o_run_ms float8)
LANGUAGE plpgsql AS $fn$
DECLARE
    c record;
    d record;
BEGIN
    c := transitions.completing(p_id, p_token, p_result);
    o_outcome := c.o_outcome;
    IF o_outcome <> 'done' THEN
        RETURN;
    END IF;
    o_queue := (c.o_job).queue;
    o_run_ms := c.o_run_ms;
    -- An unkeyed job has no lane: no lane row before or after.
    d := transitions.lane_delta(c.o_lane, CASE WHEN (c.o_job).lane_key IS NOT NULL THEN
        transitions.advance(o_queue, (c.o_job).lane_key, c.o_queued) END);
    PERFORM transitions.count(o_queue, p_running => -1, p_completed => 1,
        p_scheduled => d.d_scheduled, p_pending => -d.d_scheduled, p_ready => d.d_ready);
END
$fn$;

-- The guarded core of Complete, shared with complete_and_lease: locks the job's lane row
-- (lane before job: the order of every transition), marks the job completed if p_token
-- still holds it and writes its callback. Returns the job and its lane row as locked;
-- advancing the lane and counting (running -1, completed +1) are the caller's.
CREATE FUNCTION transitions.completing(p_id bigint, p_token bigint, p_result text,
    OUT o_outcome transition_outcome, OUT o_job jobs, OUT o_lane lane_state,
    OUT o_queued int, OUT o_run_ms float8)
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT l.state, l.queued INTO o_lane, o_queued
    FROM jobs j JOIN lanes l ON l.queue = j.queue AND l.lane_key = j.lane_key
    WHERE j.id = p_id FOR UPDATE OF l;
    UPDATE jobs SET state = 'completed', result = p_result::json, finished_at = now(),
        lease_expires_at = NULL, progress_percent = 100, progress_message = NULL,
        last_error = NULL
    WHERE id = p_id AND lease_token = p_token AND state = 'running'
    RETURNING * INTO o_job;
    IF o_job.id IS NULL THEN
        o_outcome := transitions.unmatched(p_id, p_token, '{completed}');
        RETURN;
    END IF;
    IF o_job.lane_key IS NOT NULL AND o_lane IS DISTINCT FROM 'running' THEN
        PERFORM transitions.drift(o_job.queue, o_job.lane_key,
            format('job %s was running but the lane is %s', p_id, coalesce(o_lane::text, 'gone')));
    END IF;
    IF o_job.callback_url IS NOT NULL THEN
        PERFORM transitions.outbox_completed(o_job);
    END IF;
    IF o_job.notify_finish THEN  -- the common case makes no call
        PERFORM transitions.finished(o_job);
    END IF;
    o_run_ms := extract(epoch FROM o_job.finished_at - o_job.started_at) * 1000;
    o_outcome := 'done';
END
$fn$;
