-- Global events (the n8n -> Telegram feed), written in the transaction of the change that
-- causes them, only on sessions of a coordinator with event endpoints (`lanes.events` = on,
-- set at connect): with nobody listening, nothing is written. The fan-out
-- (coordinator/src/events/fanout.rs) turns them into deliveries.

-- `job.failed` for job j (just failed for good), and `lane.blocked` when its failure stops
-- its lane (p_blocked).
CREATE FUNCTION transitions.event_failed(j jobs, p_blocked boolean) RETURNS void
LANGUAGE plpgsql AS $fn$
DECLARE
    v_data jsonb;
BEGIN
    IF current_setting('lanes.events', true) IS DISTINCT FROM 'on' THEN
        RETURN;
    END IF;
    v_data := jsonb_build_object('error', j.last_error, 'attempts', j.attempt,
                                 'agent_id', j.agent_id,
                                 'failed_at', transitions.iso(j.finished_at));
    INSERT INTO events (event_type, queue, lane, job_id, data)
    VALUES ('job.failed', j.queue, j.lane_key, j.id, v_data);
    IF p_blocked THEN
        INSERT INTO events (event_type, queue, lane, job_id, data)
        VALUES ('lane.blocked', j.queue, j.lane_key, j.id, v_data);
    END IF;
END
$fn$;

-- agent.awake / agent.asleep, written by the very statement that flips `agents.asleep`
-- (a Lease that found nothing, a wake claim, a job leased), so none is lost or invented.
-- An awake event carries the unfinished jobs of the agent's queues at that instant (the work
-- it woke for, its own job included): counted later, at fan-out, they may all be done.
CREATE FUNCTION transitions.agent_event() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    -- agents.coordinator_id names the stream (`<replica>/<n>`); events, like ListAgents,
    -- name the replica (--coordinator-id) only.
    v_data jsonb := jsonb_build_object('queues', to_jsonb(NEW.queues),
                                       'coordinator_id', split_part(NEW.coordinator_id, '/', 1));
    v_pending bigint;
BEGIN
    IF NOT NEW.asleep THEN
        SELECT COALESCE(sum(c.pending + c.running), 0) INTO v_pending
          FROM queue_counts c WHERE c.queue = ANY (NEW.queues);
        v_data := v_data || jsonb_build_object('pending', v_pending);
    END IF;
    INSERT INTO events (event_type, agent_id, data)
    VALUES (CASE WHEN NEW.asleep THEN 'agent.asleep' ELSE 'agent.awake' END, NEW.agent_id,
            v_data);
    RETURN NULL;
END
$fn$;

CREATE TRIGGER agents_state_events AFTER UPDATE OF asleep ON agents
    FOR EACH ROW WHEN (OLD.asleep IS DISTINCT FROM NEW.asleep
                       AND current_setting('lanes.events', true) = 'on')
    EXECUTE FUNCTION transitions.agent_event();
