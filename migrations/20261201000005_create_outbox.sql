-- Transactional outbox: each webhook is written in the same transaction as the state change
-- that causes it (a job callback by the transition, a global event by the fan-out); the
-- coordinator's dispatcher (coordinator/src/dispatch.rs) leases due rows as jobs are leased
-- and delivers them signed, with retries and backoff. Mirrors `DeliveryState` in
-- coordinator/src/db/states.rs.
CREATE TYPE delivery_state AS ENUM ('pending', 'delivering', 'delivered', 'failed', 'disabled');

CREATE TABLE outbox (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_type       text NOT NULL CHECK (event_type ~ '^[a-z_]+(\.[a-z_]+)+$'),
    job_id           bigint,
    queue            text,
    lane             text,
    url              text NOT NULL,
    -- The global event endpoint this row goes to (its name); NULL for a job callback.
    endpoint         text,
    payload          json NOT NULL,
    state            delivery_state NOT NULL DEFAULT 'pending',
    -- Delivery tries started; also the fencing token of a delivering lease, so it only
    -- grows. A replay gives a fresh budget by moving `attempts_base` up to it instead.
    attempts         int NOT NULL DEFAULT 0,
    attempts_base    int NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_expires_at timestamptz,
    last_status      int,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);

-- The dispatcher's probe for due rows, and for deliveries whose replica died mid-flight.
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_delivering ON outbox (lease_expires_at) WHERE state = 'delivering';
-- The operator view lists what is not delivered, newest first, never wading through the
-- (many) delivered rows; retention deletes delivered rows by age.
CREATE INDEX outbox_undelivered ON outbox (id) WHERE state <> 'delivered';
CREATE INDEX outbox_delivered ON outbox (delivered_at) WHERE state = 'delivered';
-- Flood control counts an endpoint's recent rows of one type.
CREATE INDEX outbox_endpoint_recent ON outbox (endpoint, event_type, created_at)
    WHERE endpoint IS NOT NULL;
