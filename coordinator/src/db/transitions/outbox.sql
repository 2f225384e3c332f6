-- Job callbacks, written to the outbox in the transaction of the transition that causes
-- them (Complete, Fail); the dispatcher (coordinator/src/dispatch.rs) delivers them. The
-- payloads are seed 004's: task_id, status, result or error, timestamps, metadata.

-- Timestamps in payloads: ISO 8601, UTC, microseconds.
CREATE FUNCTION transitions.iso(p_t timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT to_char(p_t AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$fn$;

-- The link a result carries, if any: the result itself when it is an http(s) URL string,
-- else its `result_url`, `url` or `google_drive_link` field.
CREATE FUNCTION transitions.result_url(p_result json) RETURNS text
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE
        WHEN json_typeof(p_result) = 'string' AND (p_result #>> '{}') ~* '^https?://'
            THEN p_result #>> '{}'
        WHEN json_typeof(p_result) = 'object'
            THEN coalesce(p_result ->> 'result_url', p_result ->> 'url',
                          p_result ->> 'google_drive_link')
    END
$fn$;

-- The `job.completed` callback of job j (just completed), to its callback_url; the result's
-- link, if it has one, as `result_url`.
CREATE FUNCTION transitions.outbox_completed(j jobs) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_link text := transitions.result_url(j.result);
    v_payload jsonb := jsonb_build_object(
        'task_id', j.id,
        'job_id', j.id,
        'status', 'completed',
        'result', j.result,
        'completed_at', transitions.iso(j.finished_at),
        'processing_time_seconds',
            round(extract(epoch FROM j.finished_at - j.started_at)::numeric, 3),
        'metadata', jsonb_build_object('attempt', j.attempt, 'agent_id', j.agent_id),
        'queue', j.queue,
        'lane', j.lane_key,
        'sequence', j.id);
BEGIN
    IF v_link IS NOT NULL THEN
        v_payload := v_payload || jsonb_build_object('result_url', v_link);
    END IF;
    INSERT INTO outbox (event_type, job_id, queue, lane, url, payload)
    VALUES ('job.completed', j.id, j.queue, j.lane_key, j.callback_url, v_payload::json);
END
$fn$;

-- The `job.failed` callback of job j (just failed for good), to its failure_callback_url,
-- else its callback_url; nothing when it has neither.
CREATE FUNCTION transitions.outbox_failed(j jobs) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF coalesce(j.failure_callback_url, j.callback_url) IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO outbox (event_type, job_id, queue, lane, url, payload)
    VALUES ('job.failed', j.id, j.queue, j.lane_key, coalesce(j.failure_callback_url, j.callback_url),
        jsonb_build_object(
            'task_id', j.id,
            'job_id', j.id,
            'status', 'failed',
            'error', j.last_error,
            'failed_at', transitions.iso(j.finished_at),
            'retry_count', j.attempt,
            'metadata', jsonb_build_object('attempt', j.attempt, 'agent_id', j.agent_id),
            'queue', j.queue,
            'lane', j.lane_key,
            'sequence', j.id)::json);
END
$fn$;
