-- Lane transitions that run on the hot path, as functions so a Complete is one round trip.
-- Both are VOLATILE: each statement inside takes a fresh snapshot, which is what lets the
-- lane lock taken first make every enqueue that linked a job to the lane visible afterwards.

-- Recomputes a lane from its jobs. The caller holds the lane row's lock (or the lane does
-- not exist). A running job is the head; else a blocked lane whose failed head is still
-- failed stays blocked (p_block names a job that just failed under the `block` policy);
-- else the first pending job by id (FIFO) is the head; else the row goes away. A head that
-- stays the same keeps its place in the ready order unless its run_at moved later (retry
-- backoff). p_delta adjusts the lane's count of unfinished jobs.
-- PL/pgSQL rather than SQL: PL/pgSQL caches the statement's plan per session.
-- The OUT values are NULL when the lane row went away.
CREATE FUNCTION lanes_relink(p_queue text, p_lane text, p_delta int, p_block bigint,
                             OUT o_state text, OUT o_head bigint, OUT o_ready_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
WITH run AS (
    SELECT id, priority FROM jobs
    WHERE queue = p_queue AND lane_key = p_lane AND state = 'running'
), blk AS (
    SELECT l.head_job_id AS id FROM lanes l JOIN jobs j ON j.id = l.head_job_id
    WHERE l.queue = p_queue AND l.lane_key = p_lane AND j.state = 'failed'
      AND (l.state = 'blocked' OR l.head_job_id = p_block)
), nxt AS (
    SELECT id, priority, run_at FROM jobs
    WHERE queue = p_queue AND lane_key = p_lane AND state = 'pending'
    ORDER BY id LIMIT 1
), target AS (
    SELECT id, 'running'::lane_state AS state, priority, now() AS ready_at FROM run
    UNION ALL
    SELECT id, 'blocked', 0, now() FROM blk WHERE NOT EXISTS (SELECT 1 FROM run)
    UNION ALL
    SELECT id, 'ready', priority, greatest(run_at, now()) FROM nxt
    WHERE NOT EXISTS (SELECT 1 FROM run) AND NOT EXISTS (SELECT 1 FROM blk)
), gone AS (
    DELETE FROM lanes WHERE queue = p_queue AND lane_key = p_lane AND NOT EXISTS (SELECT 1 FROM target)
)
INSERT INTO lanes AS l (queue, lane_key, head_job_id, state, priority, ready_at, queued)
SELECT p_queue, p_lane, id, state, priority, ready_at, greatest(p_delta, 0) FROM target
ON CONFLICT (queue, lane_key) DO UPDATE SET
    head_job_id = EXCLUDED.head_job_id,
    state = EXCLUDED.state,
    priority = EXCLUDED.priority,
    queued = greatest(l.queued + p_delta, 0),
    ready_at = CASE
        WHEN l.head_job_id = EXCLUDED.head_job_id AND l.state = 'ready' AND EXCLUDED.state = 'ready'
        THEN greatest(l.ready_at, (SELECT run_at FROM nxt))
        ELSE EXCLUDED.ready_at END
RETURNING l.state::text, l.head_job_id, l.ready_at INTO o_state, o_head, o_ready_at;
END
$fn$;

-- Completes a job held with p_token and advances its lane. Returns 'ok', 'stale' (the token
-- no longer holds the job) or 'missing' (no such job). The lane row is locked before the job
-- row (the order every transition uses) and before the relink reads the lane's jobs.
CREATE FUNCTION lanes_complete(p_id bigint, p_token bigint, p_result jsonb)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_queue text;
    v_lane text;
BEGIN
    SELECT l.queue, l.lane_key INTO v_queue, v_lane
    FROM lanes l JOIN jobs j ON j.queue = l.queue AND j.lane_key = l.lane_key
    WHERE j.id = p_id
    FOR UPDATE OF l;

    UPDATE jobs SET state = 'completed', result = p_result, finished_at = now(),
                    lease_expires_at = NULL, progress_percent = 100
    WHERE id = p_id AND lease_token = p_token AND jobs.state = 'running';
    IF NOT FOUND THEN
        RETURN CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE id = p_id) THEN 'stale' ELSE 'missing' END;
    END IF;

    IF v_lane IS NOT NULL THEN
        PERFORM lanes_relink(v_queue, v_lane, -1, NULL);
    END IF;
    RETURN 'ok';
END
$fn$;

-- Completes several jobs in one call (the coordinator's Complete batcher). Their lanes are
-- locked in (queue, lane_key) order, the order enqueue batches use too, so concurrent
-- batches never wait on each other in a cycle.
CREATE FUNCTION lanes_complete_many(p_ids bigint[], p_tokens bigint[], p_results jsonb[])
RETURNS TABLE (o_id bigint, o_status text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT u.id, u.token, u.result
        FROM unnest(p_ids, p_tokens, p_results) AS u(id, token, result)
        LEFT JOIN jobs j ON j.id = u.id
        ORDER BY j.queue, j.lane_key, u.id
    LOOP
        o_id := r.id;
        o_status := lanes_complete(r.id, r.token, r.result);
        RETURN NEXT;
    END LOOP;
END
$fn$;
