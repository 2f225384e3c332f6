-- Fail: an attempt of a running job held with p_token ended badly (p_end says how). The
-- job's next state is decided here, in one place, on the database's clock:
--
--   cancelled, or a cancellation was requested  -> cancelled
--   released (the agent is shutting down)       -> pending now, the attempt not counted
--   retryable or expired, attempts left         -> back to its lane's head (or, unkeyed,
--                                                  scheduled) after the backoff
--   otherwise                                   -> failed: the job.failed callback and event,
--                                                  and under `block` its lane stops
--
-- An expiry (the reaper) applies only while the lease is still lapsed ('refused' once a
-- heartbeat renewed it). A repeat by the same holder is 'repeated' and changes nothing.
-- p_error empty keeps the job's last error (a release has none).
CREATE FUNCTION transitions.fail(p_id bigint, p_token bigint, p_end attempt_end,
    p_error text, p_retry_after_ms bigint,
    OUT o_outcome transition_outcome, OUT o_state job_state, OUT o_queue text)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_lane lane_state;
    v_queued int;
    j jobs;
    q queues;
    v_run_at timestamptz := now();
    v_after lane_state;
    d record;
    v_error text := nullif(p_error, '');
BEGIN
    SELECT l.state, l.queued INTO v_lane, v_queued
    FROM jobs jj JOIN lanes l ON l.queue = jj.queue AND l.lane_key = jj.lane_key
    WHERE jj.id = p_id FOR UPDATE OF l;
    SELECT * INTO j FROM jobs WHERE id = p_id AND lease_token = p_token AND state = 'running'
    FOR UPDATE;
    IF j.id IS NULL THEN
        o_outcome := transitions.unmatched(p_id, p_token,
            '{scheduled,pending,failed,cancelled}');
        SELECT state, queue INTO o_state, o_queue FROM jobs WHERE id = p_id;
        RETURN;
    END IF;
    o_queue := j.queue;
    IF p_end = 'expired' AND j.lease_expires_at >= now() THEN
        o_outcome := 'refused';
        o_state := 'running';
        RETURN;
    END IF;
    SELECT * INTO q FROM queues WHERE name = j.queue;

    o_state := CASE
        WHEN p_end = 'cancelled' OR j.cancel_requested THEN 'cancelled'
        WHEN p_end = 'released' THEN 'pending'
        WHEN p_end IN ('retryable', 'expired') AND j.attempt < j.max_attempts THEN 'pending'
        ELSE 'failed' END::job_state;
    IF o_state = 'pending' AND p_end <> 'released' THEN
        v_run_at := now() + transitions.backoff(j, q, p_retry_after_ms);
        IF j.lane_key IS NULL AND v_run_at > now() THEN
            o_state := 'scheduled';
        END IF;
    END IF;

    IF o_state IN ('pending', 'scheduled') THEN
        UPDATE jobs SET state = o_state, run_at = v_run_at, lease_expires_at = NULL,
            attempt = attempt - (p_end = 'released')::int,
            last_error = coalesce(v_error, last_error)
        WHERE id = p_id RETURNING * INTO j;
        IF j.lane_key IS NOT NULL THEN
            -- Still its lane's head: the lane waits for it, or offers it again now.
            v_after := CASE WHEN v_run_at > now() THEN 'scheduled' ELSE 'ready' END;
            UPDATE lanes SET state = v_after, ready_at = v_run_at
            WHERE queue = j.queue AND lane_key = j.lane_key;
        END IF;
        d := transitions.lane_delta(v_lane, v_after);
        PERFORM transitions.count(j.queue, p_running => -1,
            p_pending => (o_state = 'pending')::int - d.d_scheduled,
            p_scheduled => (o_state = 'scheduled')::int + d.d_scheduled,
            p_ready => (o_state = 'pending' AND j.lane_key IS NULL)::int + d.d_ready);
        o_outcome := 'done';
        RETURN;
    END IF;

    UPDATE jobs SET state = o_state, finished_at = now(), lease_expires_at = NULL,
        last_error = coalesce(v_error, last_error)
    WHERE id = p_id RETURNING * INTO j;
    PERFORM transitions.finished(j);
    IF o_state = 'failed' THEN
        PERFORM transitions.outbox_failed(j);
        PERFORM transitions.event_failed(j, j.lane_key IS NOT NULL AND q.failure_policy = 'block');
    END IF;
    IF j.lane_key IS NOT NULL THEN
        IF o_state = 'failed' AND q.failure_policy = 'block' THEN
            -- The failed job stays the head of a stopped lane; it no longer counts as queued.
            UPDATE lanes SET state = 'blocked', ready_at = now(), queued = queued - 1
            WHERE queue = j.queue AND lane_key = j.lane_key;
            v_after := 'blocked';
        ELSE
            v_after := transitions.advance(j.queue, j.lane_key, v_queued);
        END IF;
    END IF;
    d := transitions.lane_delta(v_lane, v_after);
    PERFORM transitions.count(j.queue, p_running => -1,
        p_failed => (o_state = 'failed')::int, p_cancelled => (o_state = 'cancelled')::int,
        p_scheduled => d.d_scheduled, p_pending => -d.d_scheduled, p_ready => d.d_ready);
    o_outcome := 'done';
END
$fn$;

-- The wait before the next attempt: p_retry_after_ms when the handler asked for one, else
-- initial x 2^(attempt-1) with +-20 % jitter; capped either way. The job's own backoff, else
-- its queue's.
CREATE FUNCTION transitions.backoff(j jobs, q queues, p_retry_after_ms bigint)
RETURNS interval LANGUAGE plpgsql AS $fn$
DECLARE
    v_initial bigint := coalesce(j.backoff_initial_ms, q.backoff_initial_ms);
    v_max bigint := greatest(coalesce(j.backoff_max_ms, q.backoff_max_ms), v_initial);
BEGIN
    RETURN least(
        CASE WHEN p_retry_after_ms IS NOT NULL THEN greatest(p_retry_after_ms, 0)::float8
             ELSE v_initial * power(2::float8, least(greatest(j.attempt - 1, 0), 30))
                  * (0.8 + 0.4 * random()) END,
        v_max::float8) * interval '1 millisecond';
END
$fn$;

-- Fail, then lease the same agent its next job, in one round trip. A repeat of the request
-- (its reply was lost) gets back the lease it took.
CREATE FUNCTION transitions.fail_and_lease(p_id bigint, p_token bigint, p_end attempt_end,
    p_error text, p_retry_after_ms bigint, p_agent text, p_queues text[], p_request text,
    OUT o_outcome transition_outcome, OUT o_state job_state, OUT o_queue text,
    OUT o_next leased_job)
LANGUAGE plpgsql AS $fn$
DECLARE
    f record;
BEGIN
    o_next := transitions.repeated(p_agent, p_request);
    IF o_next.id IS NOT NULL THEN
        o_outcome := 'repeated';
        SELECT state, queue INTO o_state, o_queue FROM jobs WHERE id = p_id;
        RETURN;
    END IF;
    SELECT * INTO f FROM transitions.fail(p_id, p_token, p_end, p_error, p_retry_after_ms);
    o_outcome := f.o_outcome;
    o_state := f.o_state;
    o_queue := f.o_queue;
    IF o_outcome IN ('done', 'repeated') THEN
        o_next := transitions.take(p_agent, p_queues, p_request);
        PERFORM transitions.count_taken(o_next);
    END IF;
END
$fn$;
