-- Global events (the n8n → Telegram feed): agent awake/asleep, a job failed for good, a lane
-- blocked, watchdog alerts. Each is written as an `events` row in the same transaction as
-- the state change that causes it; the coordinator's fan-out (coordinator/src/events/)
-- turns it into one `outbox` row per configured endpoint whose filter matches, and deletes
-- it. Rows are written only by a coordinator with endpoints (session setting
-- `lanes.events = on`, see transitions/events.sql).
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
