-- One row per lane that has unfinished work (or is blocked by a failed job). Its head is the
-- only job of the lane that may run. Leasing reads this table's ready index, never the
-- lane's queued jobs, so its cost does not grow with the backlog. The transitions keep it in
-- step with `jobs`; `transitions.check()` lists any row that disagrees with its jobs.
-- Mirrors `LaneState` in coordinator/src/db/states.rs.
CREATE TYPE lane_state AS ENUM (
    'scheduled',  -- its head waits for its run_at (a delay or a retry backoff)
    'ready',      -- its head may be leased now
    'running',    -- its head is leased
    'blocked'     -- its head failed under the `block` policy; an operator must act
);

CREATE TABLE lanes (
    queue       text NOT NULL,
    lane_key    text NOT NULL,
    head_job_id bigint NOT NULL,
    state       lane_state NOT NULL,
    -- The head's priority, and when it may run (scheduled) or became ready (ready).
    priority    int NOT NULL,
    ready_at    timestamptz NOT NULL,
    -- Unfinished (scheduled, pending or running) jobs of the lane. A blocked lane's failed
    -- head is not one of them. Gives `position_in_lane` without counting the lane's backlog.
    queued      int NOT NULL CHECK (queued >= 0),
    PRIMARY KEY (queue, lane_key),
    CONSTRAINT has_work CHECK (state = 'blocked' OR queued >= 1)
);

-- The lease probe: best priority first, then the lane whose head became ready earliest
-- (fairness: a lane re-enters at now() after each job, behind lanes already waiting). Only
-- ready lanes are in it, so its first entry is leasable unless another leaser holds it.
CREATE INDEX lanes_ready ON lanes (queue, priority DESC, ready_at) WHERE state = 'ready';
-- Promoting scheduled lanes when their head falls due, earliest first.
CREATE INDEX lanes_scheduled ON lanes (ready_at) WHERE state = 'scheduled';
CREATE INDEX lanes_blocked ON lanes (queue) WHERE state = 'blocked';
