-- Promote: scheduled work that fell due becomes leasable: unkeyed jobs go `pending` (into
-- jobs_unkeyed_ready) and lanes whose head waited go `ready` (into lanes_ready), keeping
-- the time they fell due as their place in the ready order. This is what keeps the lease
-- indexes free of rows that cannot run yet. At most p_limit of each per call, earliest
-- first, SKIP LOCKED so replicas promoting at once never wait on each other. Returns how
-- many became ready per queue (agents to wake).
CREATE FUNCTION transitions.promote(p_limit int)
RETURNS TABLE (o_queue text, o_ready bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN
        WITH due AS (
            SELECT id FROM jobs WHERE state = 'scheduled' AND run_at <= now()
            ORDER BY run_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
        up AS (
            UPDATE jobs j SET state = 'pending' FROM due WHERE j.id = due.id RETURNING j.queue)
        SELECT queue, count(*) AS n FROM up GROUP BY queue
    LOOP
        PERFORM transitions.count(r.queue, p_scheduled => -r.n, p_pending => r.n,
                                  p_ready => r.n);
        o_queue := r.queue;
        o_ready := r.n;
        RETURN NEXT;
    END LOOP;
    FOR r IN
        WITH due AS (
            SELECT queue, lane_key FROM lanes WHERE state = 'scheduled' AND ready_at <= now()
            ORDER BY ready_at LIMIT p_limit FOR UPDATE SKIP LOCKED),
        up AS (
            UPDATE lanes l SET state = 'ready' FROM due
            WHERE l.queue = due.queue AND l.lane_key = due.lane_key RETURNING l.queue)
        SELECT queue, count(*) AS n FROM up GROUP BY queue
    LOOP
        PERFORM transitions.count(r.queue, p_scheduled => -r.n, p_pending => r.n,
                                  p_ready => r.n);
        o_queue := r.queue;
        o_ready := r.n;
        RETURN NEXT;
    END LOOP;
END
$fn$;

-- How long until the next scheduled job or lane falls due, in milliseconds on the
-- database's clock (0 when overdue; NULL: nothing is scheduled), so the promoter sleeps
-- exactly that long whatever its own clock says.
CREATE FUNCTION transitions.next_due_ms() RETURNS bigint
LANGUAGE plpgsql AS $fn$
DECLARE
    v_due timestamptz := least((SELECT min(run_at) FROM jobs WHERE state = 'scheduled'),
                               (SELECT min(ready_at) FROM lanes WHERE state = 'scheduled'));
BEGIN
    -- (greatest() skips NULLs: nothing scheduled must stay NULL, not become "due now".)
    IF v_due IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN greatest(0, ceil(extract(epoch FROM v_due - now()) * 1000))::bigint;
END
$fn$;
