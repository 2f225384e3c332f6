-- Check: everything the transitions keep in step that disagrees, as (what, queue, lane,
-- detail): lane rows against their jobs (a row for every lane with unfinished work, none
-- for a lane without; the head; the state; the count of unfinished jobs) and each queue's
-- counters against a full count. Empty when all agree. It reads every unfinished job and
-- counts every job: for the test suite after load and chaos, and for an operator
-- (docs/operations.md), never for a hot path.
CREATE FUNCTION transitions.check()
RETURNS TABLE (o_what text, o_queue text, o_lane text, o_detail text)
LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN QUERY
    WITH lj AS (
        SELECT queue, lane_key, count(*) AS queued,
               max(id) FILTER (WHERE state = 'running') AS running,
               count(*) FILTER (WHERE state = 'running') AS n_running
        FROM jobs WHERE lane_key IS NOT NULL AND state IN ('pending', 'running')
        GROUP BY queue, lane_key)
    SELECT 'lane', coalesce(l.queue, lj.queue), coalesce(l.lane_key, lj.lane_key), p.detail
    FROM lanes l
    FULL JOIN lj ON lj.queue = l.queue AND lj.lane_key = l.lane_key
    LEFT JOIN jobs h ON h.id = l.head_job_id
    CROSS JOIN LATERAL (VALUES
        (CASE WHEN l.queue IS NULL
              THEN format('%s unfinished jobs but no lane row', lj.queued) END),
        (CASE WHEN l.queue IS NOT NULL AND l.queued <> coalesce(lj.queued, 0)
              THEN format('queued is %s but %s jobs are unfinished', l.queued,
                          coalesce(lj.queued, 0)) END),
        (CASE WHEN lj.n_running > 1 THEN format('%s jobs running', lj.n_running) END),
        (CASE WHEN l.queue IS NOT NULL AND (h.id IS NULL OR h.queue <> l.queue
                                            OR h.lane_key <> l.lane_key)
              THEN format('head %s is not a job of the lane', l.head_job_id) END),
        (CASE WHEN lj.running IS NOT NULL AND l.queue IS NOT NULL
                   AND (l.state <> 'running' OR l.head_job_id <> lj.running)
              THEN format('job %s runs but the lane is %s with head %s', lj.running, l.state,
                          l.head_job_id) END),
        (CASE WHEN l.state = 'running' AND lj.running IS NULL
              THEN 'the lane is running but none of its jobs is' END),
        (CASE WHEN l.state IN ('ready', 'scheduled') AND h.state IS DISTINCT FROM 'pending'
              THEN format('the lane is %s but its head %s is %s', l.state, l.head_job_id,
                          h.state) END),
        (CASE WHEN l.state = 'blocked' AND h.state IS DISTINCT FROM 'failed'
              THEN format('the lane is blocked but its head %s is %s', l.head_job_id,
                          h.state) END),
        (CASE WHEN l.state = 'ready' AND l.ready_at > now()
              THEN format('the lane is ready but only from %s', l.ready_at) END)
    ) AS p(detail)
    WHERE p.detail IS NOT NULL;

    RETURN QUERY
    WITH counted AS (
        SELECT queue, sum(scheduled) AS scheduled, sum(pending) AS pending,
               sum(ready) AS ready, sum(running) AS running, sum(completed) AS completed,
               sum(failed) AS failed, sum(cancelled) AS cancelled
        FROM queue_counts GROUP BY queue),
    js AS (
        SELECT queue,
               count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
               count(*) FILTER (WHERE state = 'pending') AS pending,
               count(*) FILTER (WHERE state = 'pending' AND lane_key IS NULL) AS unkeyed_ready,
               count(*) FILTER (WHERE state = 'running') AS running,
               count(*) FILTER (WHERE state = 'completed') AS completed,
               count(*) FILTER (WHERE state = 'failed') AS failed,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled
        FROM jobs GROUP BY queue),
    ls AS (
        SELECT queue, count(*) FILTER (WHERE state = 'scheduled') AS scheduled,
               count(*) FILTER (WHERE state = 'ready') AS ready
        FROM lanes GROUP BY queue),
    truth AS (
        SELECT q.name AS queue,
               coalesce(js.scheduled, 0) + coalesce(ls.scheduled, 0) AS scheduled,
               coalesce(js.pending, 0) - coalesce(ls.scheduled, 0) AS pending,
               coalesce(js.unkeyed_ready, 0) + coalesce(ls.ready, 0) AS ready,
               coalesce(js.running, 0) AS running, coalesce(js.completed, 0) AS completed,
               coalesce(js.failed, 0) AS failed, coalesce(js.cancelled, 0) AS cancelled
        FROM queues q LEFT JOIN js ON js.queue = q.name LEFT JOIN ls ON ls.queue = q.name)
    SELECT 'counts', t.queue, NULL::text,
           format('%s: counted %s, actual %s', k.name, k.counted, k.actual)
    FROM truth t LEFT JOIN counted c ON c.queue = t.queue
    CROSS JOIN LATERAL (VALUES
        ('scheduled', c.scheduled, t.scheduled), ('pending', c.pending, t.pending),
        ('ready', c.ready, t.ready), ('running', c.running, t.running),
        ('completed', c.completed, t.completed), ('failed', c.failed, t.failed),
        ('cancelled', c.cancelled, t.cancelled)) AS k(name, counted, actual)
    WHERE k.counted IS DISTINCT FROM k.actual;
END
$fn$;

-- Recount: sets queue p_queue's counters (every queue's when NULL) to a full count of its
-- jobs and lanes, for an operator after a repair (docs/operations.md). Its counter rows are
-- locked first, so transitions of the queue wait for the count instead of being lost in it.
CREATE FUNCTION transitions.recount(p_queue text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    PERFORM 1 FROM queue_counts WHERE p_queue IS NULL OR queue = p_queue
    ORDER BY queue, slot FOR UPDATE;
    UPDATE queue_counts c SET scheduled = 0, pending = 0, ready = 0, running = 0,
        completed = 0, failed = 0, cancelled = 0
    WHERE p_queue IS NULL OR c.queue = p_queue;
    UPDATE queue_counts c SET
        scheduled = t.scheduled, pending = t.pending, ready = t.ready, running = t.running,
        completed = t.completed, failed = t.failed, cancelled = t.cancelled
    FROM (
        SELECT q.name,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'scheduled')
              + (SELECT count(*) FROM lanes WHERE queue = q.name AND state = 'scheduled')
              AS scheduled,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'pending')
              - (SELECT count(*) FROM lanes WHERE queue = q.name AND state = 'scheduled')
              AS pending,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'pending'
                AND lane_key IS NULL)
              + (SELECT count(*) FROM lanes WHERE queue = q.name AND state = 'ready') AS ready,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'running') AS running,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'completed')
              AS completed,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'failed') AS failed,
            (SELECT count(*) FROM jobs WHERE queue = q.name AND state = 'cancelled')
              AS cancelled
        FROM queues q WHERE p_queue IS NULL OR q.name = p_queue) t
    WHERE c.queue = t.name AND c.slot = 0;
END
$fn$;
