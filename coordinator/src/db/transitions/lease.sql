-- Lease: the agent's next job, marked running with a new fencing token (transitions.take:
-- the best ready job of its queues). p_request is the agent's id for this request: a
-- repeat of a request that already leased (its reply was lost) gets that same lease back,
-- not a second job. A job leased marks the agent awake (normally a probe that matches no
-- row: only an agent marked asleep by a Lease that found nothing is changed).
CREATE FUNCTION transitions.lease(p_agent text, p_queues text[], p_request text)
RETURNS leased_job LANGUAGE plpgsql AS $fn$
DECLARE
    v leased_job;
BEGIN
    v := transitions.repeated(p_agent, p_request);
    IF v.id IS NULL THEN
        v := transitions.take(p_agent, p_queues, p_request);
        PERFORM transitions.count_taken(v);
    END IF;
    IF v.id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE agents SET asleep = false, asleep_since = NULL WHERE agent_id = p_agent AND asleep;
    RETURN v;
END
$fn$;

-- The lease a repeated request took: the job p_agent runs under request p_request
-- (index jobs_running). NULL for a first request.
CREATE FUNCTION transitions.repeated(p_agent text, p_request text)
RETURNS leased_job LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_request IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN (SELECT transitions.leased(j, q) FROM jobs j JOIN queues q ON q.name = j.queue
            WHERE j.agent_id = p_agent AND j.state = 'running' AND j.lease_request = p_request);
END
$fn$;
