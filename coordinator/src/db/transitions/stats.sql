-- Read-only helpers of the stats views (GetStats): no state changes here, but they live with
-- the transitions so one install keeps every function in step with the schema.

-- The mean run time, in ms, of queue p_queue's last 1,000 jobs completed within the hour
-- (0 when none), read through jobs_queue_finished (queue, finished_at).
-- Planned for each call with the queue's name in hand (force_custom_plan): with the name as
-- a parameter, PostgreSQL assumed a queue's share of the finished jobs was an average one and
-- walked jobs_finished backwards through every other queue's finished jobs of the hour,
-- looking for a quiet queue's (270 ms at 1 million finished in the hour, for each GetStats).
CREATE FUNCTION transitions.recent_run_ms(p_queue text)
RETURNS float8 LANGUAGE plpgsql STABLE SET plan_cache_mode = force_custom_plan AS $fn$
BEGIN
    RETURN (SELECT coalesce(avg(extract(epoch FROM r.finished_at - r.started_at)) * 1000, 0)
            FROM (SELECT j.finished_at, j.started_at FROM jobs j
                  WHERE j.state = 'completed' AND j.queue = p_queue
                    AND j.finished_at > now() - interval '1 hour'
                  ORDER BY j.finished_at DESC LIMIT 1000) r);
END
$fn$;
