-- Per-queue settings. Every coordinator replica reads them from here, so they agree.
-- A row is created with the defaults on a queue's first enqueue.
CREATE TYPE failure_policy AS ENUM ('continue', 'block');

CREATE TABLE queues (
    name                  text PRIMARY KEY CHECK (octet_length(name) BETWEEN 1 AND 128),
    max_attempts          int NOT NULL DEFAULT 3 CHECK (max_attempts BETWEEN 1 AND 1000),
    backoff_initial_ms    bigint NOT NULL DEFAULT 5000 CHECK (backoff_initial_ms >= 0),
    backoff_max_ms        bigint NOT NULL DEFAULT 3600000 CHECK (backoff_max_ms >= backoff_initial_ms),
    lease_ttl_ms          bigint NOT NULL DEFAULT 30000 CHECK (lease_ttl_ms BETWEEN 1000 AND 86400000),
    job_timeout_ms        bigint NOT NULL DEFAULT 600000 CHECK (job_timeout_ms >= 1000),
    retention_completed_s bigint NOT NULL DEFAULT 86400 CHECK (retention_completed_s >= 0),
    retention_failed_s    bigint NOT NULL DEFAULT 604800 CHECK (retention_failed_s >= 0),
    max_pending           bigint CHECK (max_pending > 0),
    max_running           int CHECK (max_running > 0),
    paused                boolean NOT NULL DEFAULT false,
    failure_policy        failure_policy NOT NULL DEFAULT 'continue',
    updated_at            timestamptz NOT NULL DEFAULT now()
);
