-- What the transition functions (schema `transitions`, installed by the coordinator from
-- coordinator/src/db/transitions/*.sql) take and return. They are types, not code, so they
-- live here; the functions themselves are replaced as a whole when their code changes.

-- How a guarded transition ended. Mirrors `Outcome` in coordinator/src/db/transitions/mod.rs.
CREATE TYPE transition_outcome AS ENUM (
    'done',      -- applied by this call
    'repeated',  -- already applied by this same request or holder (its reply was lost):
                 -- nothing changed, and the caller answers as it did the first time
    'stale',    -- the fencing token no longer holds the job: nothing changed
    'missing',  -- no such job (or lane)
    'refused'   -- the job is not in a state this transition applies to: nothing changed
);

-- How an attempt ended badly (Fail and the reaper). Mirrors `AttemptEnd` in
-- coordinator/src/db/transitions/fail.rs. The job's next state follows from it, the
-- attempts left and a pending cancellation, decided in one place (transitions.fail).
CREATE TYPE attempt_end AS ENUM (
    'retryable',  -- retry after the backoff while attempts remain, else fail
    'permanent',  -- fail now
    'released',   -- hand back without counting the attempt (agent shutting down)
    'cancelled',  -- the handler stopped because cancellation was requested
    'expired'     -- the lease lapsed (reaper): like retryable, only if still lapsed
);

-- A job as an agent gets it with its lease, with the queue settings it runs under.
CREATE TYPE leased_job AS (
    id               bigint,
    queue            text,
    lane_key         text,
    payload          text,
    attempt          int,
    max_attempts     int,
    lease_token      bigint,
    lease_expires_at timestamptz,
    started_at       timestamptz,
    run_at           timestamptz,
    traceparent      text,
    tracestate       text,
    lease_ttl_ms     bigint,
    job_timeout_ms   bigint,
    soft_timeout_ms  bigint
);

-- The version of the installed transition functions (a hash of their source), so replicas
-- starting together install them once, and a new release replaces them as a whole.
CREATE TABLE transitions_code (
    id           int PRIMARY KEY CHECK (id = 1),
    hash         text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);

-- A job as clients and operators see it (ClientService, AdminService, the gateway): every
-- column, the state spelled as text and the JSON as text, exactly as stored.
CREATE TYPE job_view AS (
    id                   bigint,
    queue                text,
    lane_key             text,
    payload              text,
    priority             int,
    state                text,
    run_at               timestamptz,
    attempt              int,
    max_attempts         int,
    idempotency_key      text,
    callback_url         text,
    failure_callback_url text,
    traceparent          text,
    tracestate           text,
    lease_token          bigint,
    lease_expires_at     timestamptz,
    agent_id             text,
    cancel_requested     boolean,
    progress_percent     int,
    progress_message     text,
    result               text,
    last_error           text,
    created_at           timestamptz,
    started_at           timestamptz,
    finished_at          timestamptz,
    timeout_ms           bigint,
    soft_timeout_ms      bigint,
    backoff_initial_ms   bigint,
    backoff_max_ms       bigint
);
