-- Leasing as functions, so that "complete and give me my next job" is one autocommit round
-- trip (lanes_complete_next), and Lease and Complete share one copy of the lease probe.

-- The lease probe. For each served queue that is not paused it takes the best ready lanes
-- (index `lanes_ready`: priority, then the head that became ready earliest) and the best
-- ready unkeyed jobs (index `jobs_unkeyed_ready`), skipping rows other leasers hold, then
-- marks the overall best running with a new fencing token: a few index probes per queue,
-- however many jobs or lanes wait. p_agents names the agents, one per job wanted: the n-th
-- best job goes to the n-th agent. Queues with `max_running` are left out unless p_capped
-- (the caller then holds the queue's lock and passes the room left as p_limit).
CREATE FUNCTION lanes_lease(p_queues text[], p_agents text[], p_limit bigint, p_capped boolean)
RETURNS TABLE (o_job jobs, o_ttl bigint, o_timeout bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    RETURN QUERY
WITH qs AS (
    SELECT name, lease_ttl_ms, job_timeout_ms FROM queues
    WHERE name = ANY(p_queues) AND NOT paused AND (max_running IS NULL OR p_capped)
), lp AS (
    SELECT c.queue, c.lane_key, c.head_job_id AS job_id, c.priority, c.ready_at
    FROM qs CROSS JOIN LATERAL (
        SELECT l.queue, l.lane_key, l.head_job_id, l.priority, l.ready_at FROM lanes l
        WHERE l.queue = qs.name AND l.state = 'ready' AND l.ready_at <= now()
        ORDER BY l.priority DESC, l.ready_at
        LIMIT p_limit FOR UPDATE SKIP LOCKED) c
), up AS (
    SELECT c.queue, NULL::text AS lane_key, c.id AS job_id, c.priority, c.run_at AS ready_at
    FROM qs CROSS JOIN LATERAL (
        SELECT j.queue, j.id, j.priority, j.run_at FROM jobs j
        WHERE j.queue = qs.name AND j.state = 'pending' AND j.lane_key IS NULL AND j.run_at <= now()
        ORDER BY j.priority DESC, j.run_at, j.id
        LIMIT p_limit FOR UPDATE SKIP LOCKED) c
), best AS (
    SELECT c.*, row_number() OVER (ORDER BY c.priority DESC, c.ready_at) AS rn
    FROM (SELECT * FROM lp UNION ALL SELECT * FROM up) c
    ORDER BY c.priority DESC, c.ready_at LIMIT p_limit
), lane_up AS (
    UPDATE lanes l SET state = 'running' FROM best b
    WHERE b.lane_key IS NOT NULL AND l.queue = b.queue AND l.lane_key = b.lane_key
)
UPDATE jobs j SET state = 'running', attempt = j.attempt + 1,
    lease_token = nextval('lease_tokens'),
    lease_expires_at = now() + qs.lease_ttl_ms * interval '1 millisecond',
    agent_id = p_agents[b.rn], started_at = now(), progress_percent = NULL, progress_message = NULL
FROM best b JOIN qs ON qs.name = b.queue
WHERE j.id = b.job_id AND j.state = 'pending'
RETURNING j, qs.lease_ttl_ms, qs.job_timeout_ms;
END
$fn$;

-- Completes a job held with p_token, advances its lane, and leases p_agent its next job
-- from p_queues (its lane's next job competes fairly with lanes already waiting). Raises
-- SQLSTATE LN409 when the token no longer holds the job and LN404 when there is no such job:
-- the statement then changes nothing. Only for queues without `max_running`.
CREATE FUNCTION lanes_complete_next(p_id bigint, p_token bigint, p_result jsonb,
                                    p_queues text[], p_agent text)
RETURNS TABLE (o_job jobs, o_ttl bigint, o_timeout bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_status text;
BEGIN
    v_status := lanes_complete(p_id, p_token, p_result);
    IF v_status = 'stale' THEN
        RAISE EXCEPTION 'lease token % no longer holds job %', p_token, p_id USING ERRCODE = 'LN409';
    ELSIF v_status = 'missing' THEN
        RAISE EXCEPTION 'job % does not exist', p_id USING ERRCODE = 'LN404';
    END IF;
    RETURN QUERY SELECT * FROM lanes_lease(p_queues, ARRAY[p_agent], 1, false);
END
$fn$;
