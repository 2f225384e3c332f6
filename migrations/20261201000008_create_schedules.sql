-- Recurring schedules (cron in a time zone) and the ticks they fired. A tick is one
-- (schedule, fire time) row, inserted in the same transaction as its job: the primary key
-- makes "each tick enqueues one job" a database fact, whichever replica fires it.

-- What a schedule does with ticks no replica fired within the misfire grace (every replica
-- was down): skip them, or enqueue one job for the latest of them.
CREATE TYPE schedule_missed AS ENUM ('skip', 'run_once');

CREATE TABLE schedules (
    name          text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,128}$'),
    -- Cron expression (5 fields, or 6 with seconds first), checked by the coordinator.
    cron          text NOT NULL,
    -- IANA time zone the cron is read in, e.g. Europe/Paris.
    timezone      text NOT NULL,
    -- The job template: each tick enqueues one job like this.
    queue         text NOT NULL REFERENCES queues (name),
    lane          text CHECK (octet_length(lane) BETWEEN 1 AND 256),
    -- json, not jsonb: kept byte for byte, like jobs.payload.
    payload       json NOT NULL,
    priority      int NOT NULL DEFAULT 0,
    missed        schedule_missed NOT NULL DEFAULT 'skip',
    enabled       boolean NOT NULL DEFAULT true,
    -- Ticks up to this time are dealt with (fired or skipped): the scheduler starts after
    -- it. Set to now() on creation and whenever the timing changes or the schedule is
    -- enabled again, so a pause or an old cron leaves nothing to catch up.
    fired_through timestamptz NOT NULL DEFAULT now(),
    -- When the scheduler should look at it next (its next tick); now() to have it
    -- recomputed by the next pass; NULL when the cron has no next time.
    next_fire_at  timestamptz DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- The scheduler's question, each pass: which enabled schedules are due, and when is the next.
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

CREATE TABLE schedule_ticks (
    schedule   text NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    fire_at    timestamptz NOT NULL,
    -- The job this tick enqueued (no foreign key: finished jobs are purged).
    job_id     bigint,
    -- The database's now() when it fired: later than fire_at by the scheduler's lateness,
    -- or by the downtime for a run_once catch-up.
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, fire_at)
);

-- Pruning old ticks by age.
CREATE INDEX schedule_ticks_fire_at ON schedule_ticks (fire_at);
