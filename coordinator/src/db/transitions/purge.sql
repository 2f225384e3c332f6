-- Purge (retention, and an operator's clear): finished jobs older than p_older_than_s
-- seconds, or than their queue's retention when NULL (completed and cancelled:
-- retention_completed_s; failed: retention_failed_s), are deleted, at most p_limit per call
-- and only in p_queue when given. The failed head of a blocked lane is kept (the lane still
-- needs it). SKIP LOCKED: replicas purging at once, or an operator's retry, never wait on
-- each other. Returns how many of each state went.
CREATE FUNCTION transitions.purge(p_limit int, p_older_than_s float8, p_queue text)
RETURNS TABLE (o_state job_state, o_count bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH doomed AS (
            SELECT j.id FROM jobs j JOIN queues q ON q.name = j.queue
            -- The first bound repeats the smallest threshold so the jobs_finished index
            -- bounds the scan; the second is exact per row.
            WHERE j.state IN ('completed', 'failed', 'cancelled')
              AND j.finished_at < now() - make_interval(secs => coalesce(p_older_than_s,
                    (SELECT min(least(retention_completed_s, retention_failed_s))
                     FROM queues)::float8))
              AND j.finished_at < now() - make_interval(secs => coalesce(p_older_than_s,
                    (CASE WHEN j.state = 'failed' THEN q.retention_failed_s
                          ELSE q.retention_completed_s END)::float8))
              AND (p_queue IS NULL OR j.queue = p_queue)
              AND NOT EXISTS (SELECT 1 FROM lanes l WHERE l.queue = j.queue
                              AND l.lane_key = j.lane_key AND l.head_job_id = j.id
                              AND l.state = 'blocked')
            LIMIT p_limit FOR UPDATE OF j SKIP LOCKED),
        gone AS (DELETE FROM jobs WHERE id IN (SELECT id FROM doomed) RETURNING queue, state)
        SELECT queue, state, count(*) AS n FROM gone GROUP BY queue, state ORDER BY queue
    LOOP
        PERFORM transitions.count(r.queue, p_completed => -r.n * (r.state = 'completed')::int,
            p_failed => -r.n * (r.state = 'failed')::int,
            p_cancelled => -r.n * (r.state = 'cancelled')::int);
        o_state := r.state;
        o_count := r.n;
        RETURN NEXT;
    END LOOP;
END
$fn$;
