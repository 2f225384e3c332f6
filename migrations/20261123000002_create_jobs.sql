-- One row per job. The state machine mirrors `JobState` in coordinator/src/db/jobs.rs.
CREATE TYPE job_state AS ENUM ('pending', 'running', 'completed', 'failed', 'cancelled');

-- Fencing tokens: strictly increasing across every lease ever granted, on every replica.
CREATE SEQUENCE lease_tokens AS bigint;

CREATE TABLE jobs (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue                text NOT NULL REFERENCES queues (name),
    lane_key             text CHECK (octet_length(lane_key) BETWEEN 1 AND 256),
    payload              jsonb NOT NULL,
    priority             int NOT NULL DEFAULT 0,
    state                job_state NOT NULL DEFAULT 'pending',
    -- When the job may next run: its delay, or the end of a retry backoff.
    run_at               timestamptz NOT NULL DEFAULT now(),
    attempt              int NOT NULL DEFAULT 0,
    max_attempts         int NOT NULL,
    idempotency_key      text,
    callback_url         text,
    failure_callback_url text,
    traceparent          text,
    lease_token          bigint,
    lease_expires_at     timestamptz,
    agent_id             text,
    cancel_requested     boolean NOT NULL DEFAULT false,
    progress_percent     int,
    progress_message     text,
    result               jsonb,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    started_at           timestamptz,
    finished_at          timestamptz,
    -- A running job always holds a lease; a finished one always has its finish time.
    CONSTRAINT running_has_lease CHECK (state <> 'running' OR (lease_token IS NOT NULL AND lease_expires_at IS NOT NULL)),
    CONSTRAINT finished_has_time CHECK (state IN ('pending', 'running') OR finished_at IS NOT NULL)
);

-- Guarantee 1 as a database fact: at most one running job per lane, whatever the code does.
CREATE UNIQUE INDEX jobs_one_running_per_lane ON jobs (queue, lane_key)
    WHERE state = 'running' AND lane_key IS NOT NULL;

-- Advancing a lane: its next pending job is the first entry of this index (FIFO by id).
CREATE INDEX jobs_lane_pending ON jobs (queue, lane_key, id)
    WHERE state = 'pending' AND lane_key IS NOT NULL;

-- Leasing unkeyed jobs: the first ready entry of this index, no lane involved.
CREATE INDEX jobs_unkeyed_ready ON jobs (queue, priority DESC, run_at, id)
    WHERE state = 'pending' AND lane_key IS NULL;

-- The reaper's probe for lapsed leases, and running counts (max_running, stats).
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';

-- Idempotent enqueue within a queue.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Listing by lane, and purging finished jobs by age.
CREATE INDEX jobs_queue_lane ON jobs (queue, lane_key, id);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');
