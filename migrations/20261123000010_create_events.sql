-- Global events (the n8n → Telegram feed): agent awake/asleep, a job failed for good, a lane
-- blocked, watchdog alerts. Each is written as an `events` row in the same transaction as
-- the state change that causes it; the coordinator's fan-out (coordinator/src/events/)
-- turns it into one `outbox` row per configured endpoint whose filter matches, and the
-- dispatcher delivers those like job callbacks. An event row is deleted once fanned out.
CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type  text NOT NULL,
    queue       text,
    lane        text,
    job_id      bigint,
    agent_id    text,
    data        jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_agent ON events (agent_id, id) WHERE agent_id IS NOT NULL;

-- The outbox now carries global events too: any dotted event type, and the name of the
-- configured endpoint a row goes to (NULL: a per-job callback).
ALTER TABLE outbox DROP CONSTRAINT outbox_event_type_check;
ALTER TABLE outbox ADD CONSTRAINT outbox_event_type_check
    CHECK (event_type ~ '^[a-z_]+(\.[a-z_]+)+$');
ALTER TABLE outbox ADD COLUMN endpoint text;
-- Flood control counts an endpoint's recent rows of one type.
CREATE INDEX outbox_endpoint_recent ON outbox (endpoint, event_type, created_at)
    WHERE endpoint IS NOT NULL;

-- Events held back by flood control, per endpoint, type and queue, until their summary is
-- sent at the end of the window.
CREATE TABLE event_digests (
    endpoint    text NOT NULL,
    event_type  text NOT NULL,
    queue       text NOT NULL DEFAULT '',
    count       int NOT NULL,
    first_at    timestamptz NOT NULL,
    last_at     timestamptz NOT NULL,
    -- A few of the held events (lane, job, error), for the summary's message.
    samples     jsonb NOT NULL DEFAULT '[]',
    PRIMARY KEY (endpoint, event_type, queue)
);

-- The state last announced for each agent: a burst of flips (asleep then awake again within
-- the debounce) announces nothing, and only a change from what was said is announced.
CREATE TABLE agent_announcements (
    agent_id     text PRIMARY KEY,
    asleep       boolean NOT NULL,
    announced_at timestamptz NOT NULL DEFAULT now()
);

-- Watchdog conditions that are on: an alert fires when its row is inserted and clears when
-- the row is deleted, so each fires once and clears once, whichever replica evaluates.
CREATE TABLE watchdog_alerts (
    key       text PRIMARY KEY,
    kind      text NOT NULL,
    queue     text,
    details   jsonb NOT NULL DEFAULT '{}',
    fired_at  timestamptz NOT NULL DEFAULT now()
);

-- agent.awake / agent.asleep, written by the very statement that flips `agents.asleep`
-- (a Lease that found nothing, a wake claim, a job leased), so none is lost or invented.
-- Only on connections of a coordinator with event endpoints (`lanes.events` = on, set at
-- connect): with nobody listening, an idle agent's Lease writes nothing more.
CREATE FUNCTION lanes_agent_event() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO events (event_type, agent_id, data)
    VALUES (CASE WHEN NEW.asleep THEN 'agent.asleep' ELSE 'agent.awake' END, NEW.agent_id,
            jsonb_build_object('queues', to_jsonb(NEW.queues),
                               'coordinator_id', NEW.coordinator_id));
    RETURN NULL;
END
$fn$;

CREATE TRIGGER agents_state_events AFTER UPDATE OF asleep ON agents
    FOR EACH ROW WHEN (OLD.asleep IS DISTINCT FROM NEW.asleep
                       AND current_setting('lanes.events', true) = 'on')
    EXECUTE FUNCTION lanes_agent_event();
