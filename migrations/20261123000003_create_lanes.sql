-- One row per lane that has unfinished work (or is blocked). Its head is the lane's oldest
-- unfinished job; only the head may run. Leasing reads this table's ready index, never the
-- lane's queued jobs, so its cost does not grow with the backlog.
CREATE TYPE lane_state AS ENUM ('ready', 'running', 'blocked');

CREATE TABLE lanes (
    queue       text NOT NULL,
    lane_key    text NOT NULL,
    head_job_id bigint NOT NULL,
    state       lane_state NOT NULL,
    -- The head's priority and the time it may run (its run_at, or its retry time).
    priority    int NOT NULL,
    ready_at    timestamptz NOT NULL,
    -- Unfinished (pending or running) jobs of the lane: gives `position_in_lane` at enqueue
    -- without counting the lane's backlog.
    queued      int NOT NULL CHECK (queued >= 0),
    PRIMARY KEY (queue, lane_key)
);

-- The lease probe: best priority first, then the lane whose head became ready earliest
-- (fairness: a lane re-enters at now() after each job, behind lanes already waiting).
CREATE INDEX lanes_ready ON lanes (queue, priority DESC, ready_at) WHERE state = 'ready';
CREATE INDEX lanes_blocked ON lanes (queue) WHERE state = 'blocked';
