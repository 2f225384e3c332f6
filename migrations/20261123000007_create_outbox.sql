-- Transactional outbox: each event is written in the same transaction as the state change
-- that causes it; the coordinator's dispatcher (coordinator/src/dispatch.rs) leases due rows
-- (as jobs are leased) and delivers them as signed webhooks, with retries and backoff.
CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type       text NOT NULL CHECK (event_type IN ('job.completed', 'job.failed')),
    job_id           bigint,
    queue            text,
    lane             text,
    url              text NOT NULL,
    payload          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivering', 'delivered', 'failed', 'disabled')),
    -- Delivery attempts started; also the fencing token of a delivering lease.
    attempts         int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    last_status      int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);

-- The dispatcher's probe for due rows, and for deliveries whose replica died mid-flight.
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_delivering ON outbox (lease_expires_at) WHERE state = 'delivering';

-- Timestamps in payloads: ISO 8601, UTC, microseconds.
CREATE FUNCTION lanes_iso(p_t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT to_char(p_t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$fn$;

-- The link a result carries, if any: the result itself when it is an http(s) URL string,
-- else its `result_url`, `url` or `google_drive_link` field.
CREATE FUNCTION lanes_result_url(p_result jsonb) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE
        WHEN jsonb_typeof(p_result) = 'string' AND (p_result #>> '{}') ~* '^https?://'
            THEN p_result #>> '{}'
        WHEN jsonb_typeof(p_result) = 'object'
            THEN COALESCE(p_result ->> 'result_url', p_result ->> 'url',
                          p_result ->> 'google_drive_link')
    END
$fn$;

-- Writes the `job.completed` callback of a just-completed job, if it has a callback_url.
CREATE FUNCTION lanes_outbox_completed(p_id bigint) RETURNS void
LANGUAGE sql VOLATILE AS $fn$
    INSERT INTO outbox (event_type, job_id, queue, lane, url, payload)
    SELECT 'job.completed', j.id, j.queue, j.lane_key, j.callback_url,
        jsonb_build_object(
            'task_id', j.id,
            'job_id', j.id,
            'status', 'completed',
            'result', j.result,
            'completed_at', lanes_iso(j.finished_at),
            'processing_time_seconds',
                round(extract(epoch FROM j.finished_at - j.started_at)::numeric, 3),
            'metadata', jsonb_build_object('attempt', j.attempt, 'agent_id', j.agent_id),
            'queue', j.queue,
            'lane', j.lane_key,
            'sequence', j.id)
        || CASE WHEN lanes_result_url(j.result) IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('result_url', lanes_result_url(j.result)) END
    FROM jobs j
    WHERE j.id = p_id AND j.state = 'completed' AND j.callback_url IS NOT NULL
$fn$;

-- Writes the `job.failed` callback of a job that just failed for good, to its
-- failure_callback_url, else its callback_url; nothing when it has neither.
CREATE FUNCTION lanes_outbox_failed(p_id bigint) RETURNS void
LANGUAGE sql VOLATILE AS $fn$
    INSERT INTO outbox (event_type, job_id, queue, lane, url, payload)
    SELECT 'job.failed', j.id, j.queue, j.lane_key, COALESCE(j.failure_callback_url, j.callback_url),
        jsonb_build_object(
            'task_id', j.id,
            'job_id', j.id,
            'status', 'failed',
            'error', j.last_error,
            'failed_at', lanes_iso(j.finished_at),
            'retry_count', j.attempt,
            'metadata', jsonb_build_object('attempt', j.attempt, 'agent_id', j.agent_id),
            'queue', j.queue,
            'lane', j.lane_key,
            'sequence', j.id)
    FROM jobs j
    WHERE j.id = p_id AND j.state = 'failed'
      AND COALESCE(j.failure_callback_url, j.callback_url) IS NOT NULL
$fn$;

-- lanes_complete (migration 5) again, now also writing the job's `job.completed` callback in
-- the same statement as the completion. Jobs without a callback_url pay nothing more.
CREATE OR REPLACE FUNCTION lanes_complete(p_id bigint, p_token bigint, p_result jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_queue text;
    v_lane text;
    v_callback text;
BEGIN
    SELECT l.queue, l.lane_key INTO v_queue, v_lane
    FROM lanes l JOIN jobs j ON j.queue = l.queue AND j.lane_key = l.lane_key
    WHERE j.id = p_id
    FOR UPDATE OF l;

    UPDATE jobs SET state = 'completed', result = p_result, finished_at = now(),
                    lease_expires_at = NULL, progress_percent = 100
    WHERE id = p_id AND lease_token = p_token AND jobs.state = 'running'
    RETURNING jobs.callback_url INTO v_callback;
    IF NOT FOUND THEN
        RETURN CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE id = p_id) THEN 'stale' ELSE 'missing' END;
    END IF;

    IF v_callback IS NOT NULL THEN
        PERFORM lanes_outbox_completed(p_id);
    END IF;

    IF v_lane IS NOT NULL THEN
        PERFORM lanes_relink(v_queue, v_lane, -1, NULL);
    END IF;
    RETURN 'ok';
END
$fn$;
