-- Per-queue settings. Every coordinator replica reads them from here, so they agree. A row
-- is created with the defaults on a queue's first use. The ranges are checked, and named in
-- the error, before anything is stored (lanes_proto::limits); these CHECKs are the backstop.
CREATE TYPE failure_policy AS ENUM ('continue', 'block');

CREATE TABLE queues (
    name                  text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 128),
    max_attempts          int NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_initial_ms    bigint NOT NULL DEFAULT 5000
                          CHECK (backoff_initial_ms BETWEEN 0 AND 2592000000),
    backoff_max_ms        bigint NOT NULL DEFAULT 3600000
                          CHECK (backoff_max_ms BETWEEN backoff_initial_ms AND 2592000000),
    lease_ttl_ms          bigint NOT NULL DEFAULT 30000
                          CHECK (lease_ttl_ms BETWEEN 1000 AND 86400000),
    job_timeout_ms        bigint NOT NULL DEFAULT 600000
                          CHECK (job_timeout_ms BETWEEN 1000 AND 604800000),
    retention_completed_s bigint NOT NULL DEFAULT 86400
                          CHECK (retention_completed_s BETWEEN 0 AND 315360000),
    retention_failed_s    bigint NOT NULL DEFAULT 604800
                          CHECK (retention_failed_s BETWEEN 0 AND 315360000),
    max_pending           bigint CHECK (max_pending BETWEEN 1 AND 1000000000000),
    max_running           int CHECK (max_running BETWEEN 1 AND 1000000),
    paused                boolean NOT NULL DEFAULT false,
    failure_policy        failure_policy NOT NULL DEFAULT 'continue',
    updated_at            timestamptz NOT NULL DEFAULT now(),
    -- The handler is told (SIGTERM, a header) this long into a run; NULL: no soft limit.
    soft_timeout_ms       bigint CHECK (soft_timeout_ms BETWEEN 1000 AND 604800000),
    -- At most rate_limit jobs start in any rate_interval_ms (queue_rates keeps the starts).
    rate_limit            int CHECK (rate_limit BETWEEN 1 AND 100000),
    rate_interval_ms      bigint CHECK (rate_interval_ms BETWEEN 1 AND 86400000),
    -- An idempotency key returns its job for this long after the job was enqueued; NULL:
    -- forever.
    idempotency_window_s  bigint CHECK (idempotency_window_s BETWEEN 1 AND 315360000),
    CONSTRAINT rate_limit_whole CHECK ((rate_limit IS NULL) = (rate_interval_ms IS NULL))
);

-- The start times of a rate-limited queue's latest jobs (at most its rate_limit, oldest
-- first): a job may start when fewer than rate_limit started in the last rate_interval_ms.
-- Written by leases holding the queue row's lock, so replicas count starts one at a time.
CREATE TABLE queue_rates (
    queue  text PRIMARY KEY REFERENCES queues (name),
    starts timestamptz[] NOT NULL DEFAULT '{}'
);

-- Per-queue counts of jobs by state, kept by the transitions in the transaction of each
-- change, so stats and backpressure cost the same at 10^4 and 10^7 jobs on record. Spread
-- over 64 slots (by database backend) so concurrent transitions rarely wait on the same row;
-- a queue's count is the sum of its slots. `ready` counts what could be leased now: due
-- unkeyed jobs and ready lane heads.
CREATE TABLE queue_counts (
    queue     text NOT NULL REFERENCES queues (name),
    slot      smallint NOT NULL,
    scheduled bigint NOT NULL DEFAULT 0,
    pending   bigint NOT NULL DEFAULT 0,
    ready     bigint NOT NULL DEFAULT 0,
    running   bigint NOT NULL DEFAULT 0,
    completed bigint NOT NULL DEFAULT 0,
    failed    bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, slot)
) WITH (fillfactor = 50);  -- counters change in place (HOT): room for the new versions

-- A queue's slots exist from its first moment, so counting is always a plain UPDATE.
CREATE FUNCTION queues_create_counts() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO queue_counts (queue, slot) SELECT NEW.name, s FROM generate_series(0, 63) s;
    RETURN NULL;
END
$fn$;

CREATE TRIGGER queues_counts AFTER INSERT ON queues
    FOR EACH ROW EXECUTE FUNCTION queues_create_counts();
