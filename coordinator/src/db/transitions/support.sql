-- What the transitions share: the counters, the lane bookkeeping, the shapes they return and
-- the lease grant. Every function here runs inside a transition, never on its own, and
-- assumes the caller holds the locks it names. All are PL/pgSQL: each statement caches its
-- plan per session, and each takes a fresh snapshot, which is what makes "lock the lane
-- row, then read its jobs" see every enqueue that linked a job to the lane before the lock.

-- Adds to this backend's slot of a queue's counters (queue_counts). Each transition adds
-- once, after its row locks, so a counter row is the last lock a transition takes.
CREATE FUNCTION transitions.count(p_queue text, p_scheduled bigint DEFAULT 0,
    p_pending bigint DEFAULT 0, p_ready bigint DEFAULT 0, p_running bigint DEFAULT 0,
    p_completed bigint DEFAULT 0, p_failed bigint DEFAULT 0, p_cancelled bigint DEFAULT 0)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    UPDATE queue_counts SET scheduled = scheduled + p_scheduled, pending = pending + p_pending,
        ready = ready + p_ready, running = running + p_running,
        completed = completed + p_completed, failed = failed + p_failed,
        cancelled = cancelled + p_cancelled
    WHERE queue = p_queue AND slot = pg_backend_pid() % 64;
END
$fn$;

-- A lane's share of its queue's counters: the head of a scheduled lane counts as scheduled
-- (its job row is pending), the head of a ready lane as ready. For a lane row whose state
-- went from p_before to p_after (NULL: no row), how `scheduled` and `ready` change; `pending`
-- changes by minus the first.
CREATE FUNCTION transitions.lane_delta(p_before lane_state, p_after lane_state,
    OUT d_scheduled int, OUT d_ready int)
LANGUAGE plpgsql IMMUTABLE AS $fn$
BEGIN
    d_scheduled := (p_after IS NOT DISTINCT FROM 'scheduled')::int
                 - (p_before IS NOT DISTINCT FROM 'scheduled')::int;
    d_ready := (p_after IS NOT DISTINCT FROM 'ready')::int
             - (p_before IS NOT DISTINCT FROM 'ready')::int;
END
$fn$;

-- Counts a lane row's change of state (see lane_delta), for the transitions that make one
-- lane change outside the hot path.
CREATE FUNCTION transitions.count_lane(p_queue text, p_before lane_state, p_after lane_state)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    d record := transitions.lane_delta(p_before, p_after);
BEGIN
    IF d.d_scheduled <> 0 OR d.d_ready <> 0 THEN
        PERFORM transitions.count(p_queue, p_scheduled => d.d_scheduled,
                                  p_pending => -d.d_scheduled, p_ready => d.d_ready);
    END IF;
END
$fn$;

-- Job j just finished (completed, failed, cancelled): a client waiting for it
-- (ClientService.WaitJob set notify_finish) is told, through every coordinator.
CREATE FUNCTION transitions.finished(j jobs) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
    IF j.notify_finish THEN
        PERFORM pg_notify('lanes_done', j.id::text);
    END IF;
END
$fn$;

-- Raised when a lane row and its jobs disagree: a bug, never papered over (a transition
-- that finds one rolls back whole). transitions.repair() recomputes the lane from its jobs.
CREATE FUNCTION transitions.drift(p_queue text, p_lane text, p_what text)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'lane %/% disagrees with its jobs: %', p_queue, p_lane, p_what
        USING ERRCODE = 'LN500',
              HINT = 'SELECT transitions.repair(queue, lane_key) recomputes it from its jobs';
END
$fn$;

-- The head of a lane (p_queued: its count as the caller locked the row) just finished
-- (completed, failed under `continue`, cancelled): the next waiting job, FIFO by id, becomes
-- the head, ready or scheduled by its run_at, or the row goes when none is left. Returns the
-- lane's state afterwards (NULL: gone); counting the change is the caller's (lane_delta).
CREATE FUNCTION transitions.advance(p_queue text, p_lane text, p_queued int)
RETURNS lane_state LANGUAGE plpgsql AS $fn$
DECLARE
    v_next record;
BEGIN
    SELECT id, priority, run_at INTO v_next FROM jobs
    WHERE queue = p_queue AND lane_key = p_lane AND state = 'pending'
    ORDER BY id LIMIT 1;
    RETURN transitions.advance_to(p_queue, p_lane, p_queued, v_next.id, v_next.priority,
                                  v_next.run_at);
END
$fn$;

-- The second half of advance: the lane's next job (p_next NULL: none) is known.
CREATE FUNCTION transitions.advance_to(p_queue text, p_lane text, p_queued int,
    p_next bigint, p_priority int, p_run_at timestamptz)
RETURNS lane_state LANGUAGE plpgsql AS $fn$
DECLARE
    v_after lane_state;
BEGIN
    IF p_next IS NULL THEN
        IF p_queued <> 1 THEN
            PERFORM transitions.drift(p_queue, p_lane,
                format('its last job finished but queued was %s', p_queued));
        END IF;
        DELETE FROM lanes WHERE queue = p_queue AND lane_key = p_lane;
        RETURN NULL;
    END IF;
    v_after := CASE WHEN p_run_at > now() THEN 'scheduled' ELSE 'ready' END;
    UPDATE lanes SET head_job_id = p_next, state = v_after, priority = p_priority,
        ready_at = greatest(p_run_at, now()), queued = queued - 1
    WHERE queue = p_queue AND lane_key = p_lane;
    RETURN v_after;
END
$fn$;

-- Recomputes a lane from its jobs, for the transitions that may change any part of it
-- (cancel, retry, unblock). The caller holds the lane row's lock, or there is no row. A
-- running job is the head; else a blocked lane whose failed head is still failed stays
-- blocked (unless p_unblock); else the first waiting job by id is the head, ready or
-- scheduled; else the row goes. p_delta is the change the caller made to the lane's
-- unfinished jobs. A head that stays the same in the same state keeps its place.
CREATE FUNCTION transitions.relink(p_queue text, p_lane text, p_delta int,
                                   p_unblock boolean DEFAULT false)
RETURNS lane_state LANGUAGE plpgsql AS $fn$
DECLARE
    v_old lanes%ROWTYPE;
    v_id bigint;
    v_priority int;
    v_run_at timestamptz;
    v_state lane_state;
BEGIN
    SELECT * INTO v_old FROM lanes WHERE queue = p_queue AND lane_key = p_lane;
    SELECT id, priority, now() INTO v_id, v_priority, v_run_at FROM jobs
    WHERE queue = p_queue AND lane_key = p_lane AND state = 'running';
    IF v_id IS NOT NULL THEN
        v_state := 'running';
    ELSIF v_old.state = 'blocked' AND NOT p_unblock
          AND EXISTS (SELECT 1 FROM jobs WHERE id = v_old.head_job_id AND state = 'failed') THEN
        v_state := 'blocked';
        SELECT v_old.head_job_id, v_old.priority, v_old.ready_at INTO v_id, v_priority, v_run_at;
    ELSE
        SELECT id, priority, run_at INTO v_id, v_priority, v_run_at FROM jobs
        WHERE queue = p_queue AND lane_key = p_lane AND state = 'pending'
        ORDER BY id LIMIT 1;
        IF v_id IS NOT NULL THEN
            v_state := CASE WHEN v_run_at > now() THEN 'scheduled' ELSE 'ready' END;
        END IF;
    END IF;

    IF v_state IS NULL THEN
        IF coalesce(v_old.queued, 0) + p_delta <> 0 THEN
            PERFORM transitions.drift(p_queue, p_lane, format('no job left but queued is %s',
                coalesce(v_old.queued, 0) + p_delta));
        END IF;
        DELETE FROM lanes WHERE queue = p_queue AND lane_key = p_lane;
    ELSIF v_old.queue IS NULL THEN
        INSERT INTO lanes (queue, lane_key, head_job_id, state, priority, ready_at, queued)
        VALUES (p_queue, p_lane, v_id, v_state, v_priority, greatest(v_run_at, now()), p_delta);
    ELSE
        UPDATE lanes SET head_job_id = v_id, state = v_state, priority = v_priority,
            ready_at = CASE WHEN v_old.head_job_id = v_id AND v_old.state = v_state
                            THEN v_old.ready_at ELSE greatest(v_run_at, now()) END,
            queued = queued + p_delta
        WHERE queue = p_queue AND lane_key = p_lane;
    END IF;
    PERFORM transitions.count_lane(p_queue, v_old.state, v_state);
    RETURN v_state;
END
$fn$;

-- Repairs a lane that transitions.drift() reported: recounts its unfinished jobs and
-- recomputes its head. An operator's tool (docs/operations.md); it reads the whole lane.
CREATE FUNCTION transitions.repair(p_queue text, p_lane text)
RETURNS lane_state LANGUAGE plpgsql AS $fn$
DECLARE
    v_queued int;
    v_count int;
BEGIN
    SELECT queued INTO v_queued FROM lanes WHERE queue = p_queue AND lane_key = p_lane
    FOR UPDATE;
    SELECT count(*) INTO v_count FROM jobs
    WHERE queue = p_queue AND lane_key = p_lane AND state IN ('pending', 'running');
    RETURN transitions.relink(p_queue, p_lane, v_count - coalesce(v_queued, 0));
END
$fn$;

-- A job as clients see it. STABLE, as the state's text is (enum output): declared
-- IMMUTABLE, PostgreSQL would not inline it, and would plan and run it as a function call
-- per row (a batch enqueue's answer spent ~16 ms of 70 in it).
CREATE FUNCTION transitions.view(j jobs) RETURNS job_view
LANGUAGE sql STABLE AS $fn$
    SELECT ROW(j.id, j.queue, j.lane_key, j.payload::text, j.priority, j.state::text, j.run_at,
               j.attempt, j.max_attempts, j.idempotency_key, j.callback_url,
               j.failure_callback_url, j.traceparent, j.tracestate, j.lease_token,
               j.lease_expires_at, j.agent_id, j.cancel_requested, j.progress_percent,
               j.progress_message, j.result::text, j.last_error, j.created_at, j.started_at,
               j.finished_at, j.timeout_ms, j.soft_timeout_ms, j.backoff_initial_ms,
               j.backoff_max_ms)::job_view
$fn$;

-- A leased job as its agent gets it: its own limits, else its queue's.
CREATE FUNCTION transitions.leased(j jobs, q queues) RETURNS leased_job
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT ROW(j.id, j.queue, j.lane_key, j.payload::text, j.attempt, j.max_attempts,
               j.lease_token, j.lease_expires_at, j.started_at, j.run_at, j.traceparent,
               j.tracestate, q.lease_ttl_ms, coalesce(j.timeout_ms, q.job_timeout_ms),
               coalesce(j.soft_timeout_ms, q.soft_timeout_ms))::leased_job
$fn$;

-- Marks pending job p_id running for p_agent with a new fencing token, and a rate-limited
-- queue remembers the start (its latest rate_limit starts kept). The caller checked
-- has_room(q), holds the job's lock (and its lane's, for a keyed job) and counts the change
-- (pending -1, running +1, and ready -1 when the job was leasable as it waited).
CREATE FUNCTION transitions.grant(p_id bigint, p_agent text, p_request text, q queues)
RETURNS leased_job LANGUAGE plpgsql AS $fn$
DECLARE
    v_job jobs;
    -- The clock at the grant, not now() (this transaction's start): a lease that began
    -- before the lane's previous job was completed, and found the lane ready once that
    -- commit landed, would otherwise record a start before the previous job's finish. The
    -- lease runs from the same instant: agents read the run's limits as deadline minus
    -- lease expiry plus the TTL.
    v_start timestamptz := clock_timestamp();
BEGIN
    UPDATE jobs SET state = 'running', attempt = attempt + 1,
        lease_token = nextval('lease_tokens'),
        lease_expires_at = v_start + q.lease_ttl_ms * interval '1 millisecond',
        agent_id = p_agent, lease_request = p_request, started_at = v_start,
        progress_percent = NULL, progress_message = NULL, result = NULL
    WHERE id = p_id AND state = 'pending'
    RETURNING * INTO v_job;
    IF v_job.id IS NULL THEN
        RAISE EXCEPTION 'job % was to be leased but is not pending', p_id USING ERRCODE = 'LN500';
    END IF;
    IF q.rate_limit IS NOT NULL THEN
        INSERT INTO queue_rates AS r (queue, starts) VALUES (q.name, ARRAY[now()])
        ON CONFLICT (queue) DO UPDATE SET starts = (r.starts || now())[
            greatest(1, cardinality(r.starts) + 2 - q.rate_limit):];
    END IF;
    RETURN transitions.leased(v_job, q);
END
$fn$;

-- Whether queue q may start one more job now: not paused, under its max_running, and under
-- its rate limit. A capped or rate-limited queue's row stays locked until commit, so its
-- leases are counted one at a time across replicas (NO KEY UPDATE: enqueues' foreign-key
-- checks still pass). The lease made after it records its start (grant).
CREATE FUNCTION transitions.has_room(q queues) RETURNS boolean
LANGUAGE plpgsql AS $fn$
DECLARE
    v_running bigint;
    v_starts timestamptz[];
BEGIN
    IF q.paused THEN
        RETURN false;
    ELSIF q.max_running IS NULL AND q.rate_limit IS NULL THEN
        RETURN true;
    END IF;
    PERFORM 1 FROM queues WHERE name = q.name FOR NO KEY UPDATE;
    IF q.max_running IS NOT NULL THEN
        SELECT sum(running) INTO v_running FROM queue_counts WHERE queue = q.name;
        IF v_running >= q.max_running THEN
            RETURN false;
        END IF;
    END IF;
    IF q.rate_limit IS NOT NULL THEN
        SELECT starts INTO v_starts FROM queue_rates WHERE queue = q.name;
        RETURN coalesce(cardinality(v_starts), 0) < q.rate_limit
            OR v_starts[cardinality(v_starts) - q.rate_limit + 1]
               <= now() - q.rate_interval_ms * interval '1 millisecond';
    END IF;
    RETURN true;
END
$fn$;

-- Leases p_agent the best ready job of p_queues: the highest priority, then the one ready
-- the longest, among each queue's first ready lane (index lanes_ready) and first due unkeyed
-- job (index jobs_unkeyed_ready). Each candidate is first looked at without a lock; only the
-- one chosen is then locked (SKIP LOCKED: the best one no other leaser holds), so a leaser
-- never holds a row it does not take. Every statement is a plain index probe on one queue
-- (nothing for the planner to choose, so its cached generic plan serves every call): a few
-- probes per queue, however many jobs or lanes wait. Returns NULL when nothing is ready;
-- counting the lease (pending -1, ready -1, running +1 in its queue) is the caller's.
--
-- One queue with no unkeyed job waiting (an agent of one queue of lanes: the common case)
-- has one candidate, its first ready lane: it is locked straight away, without the look
-- first and the sort of candidates (two of the seven statements of a lease).
CREATE FUNCTION transitions.take(p_agent text, p_queues text[], p_request text)
RETURNS leased_job LANGUAGE plpgsql AS $fn$
DECLARE
    q queues;
    qs queues[] := '{}';
    c_queue int[] := '{}';
    c_keyed boolean[] := '{}';
    c_priority int[] := '{}';
    c_at timestamptz[] := '{}';
    v_priority int;
    v_at timestamptz;
    v_id bigint;
    v leased_job;
    i int;
BEGIN
    FOR q IN SELECT * FROM queues WHERE name = ANY(p_queues) AND NOT paused LOOP
        qs := qs || q;
        SELECT priority, run_at INTO v_priority, v_at FROM jobs
        WHERE queue = q.name AND state = 'pending' AND lane_key IS NULL
        ORDER BY priority DESC, run_at, id LIMIT 1;
        IF FOUND THEN
            c_queue := c_queue || cardinality(qs);
            c_keyed := c_keyed || false;
            c_priority := c_priority || v_priority;
            c_at := c_at || v_at;
        ELSIF cardinality(p_queues) = 1 THEN
            -- The only candidate is the queue's first ready lane, if any.
            IF NOT transitions.has_room(q) THEN
                RETURN NULL;
            END IF;
            RETURN transitions.take_lane(q, p_agent, p_request);
        END IF;
        SELECT priority, ready_at INTO v_priority, v_at FROM lanes
        WHERE queue = q.name AND state = 'ready' ORDER BY priority DESC, ready_at LIMIT 1;
        IF FOUND THEN
            c_queue := c_queue || cardinality(qs);
            c_keyed := c_keyed || true;
            c_priority := c_priority || v_priority;
            c_at := c_at || v_at;
        END IF;
    END LOOP;
    FOR i IN SELECT t.n FROM unnest(c_priority, c_at) WITH ORDINALITY AS t(p, a, n)
             ORDER BY t.p DESC, t.a
    LOOP
        q := qs[c_queue[i]];
        CONTINUE WHEN NOT transitions.has_room(q);
        IF c_keyed[i] THEN
            v := transitions.take_lane(q, p_agent, p_request);
            IF v.id IS NOT NULL THEN
                RETURN v;
            END IF;
        ELSE
            SELECT id INTO v_id FROM jobs
            WHERE queue = q.name AND state = 'pending' AND lane_key IS NULL
            ORDER BY priority DESC, run_at, id LIMIT 1 FOR UPDATE SKIP LOCKED;
            IF v_id IS NOT NULL THEN
                RETURN transitions.grant(v_id, p_agent, p_request, q);
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;

-- take()'s lease of queue q's best ready lane that no other leaser holds (the caller checked
-- has_room): the lane becomes `running` and its head job is granted. NULL when every ready
-- lane is locked by another leaser, or none is ready.
CREATE FUNCTION transitions.take_lane(q queues, p_agent text, p_request text)
RETURNS leased_job LANGUAGE plpgsql AS $fn$
DECLARE
    v_lane text;
    v_id bigint;
BEGIN
    SELECT lane_key, head_job_id INTO v_lane, v_id FROM lanes
    WHERE queue = q.name AND state = 'ready'
    ORDER BY priority DESC, ready_at LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF v_id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE lanes SET state = 'running' WHERE queue = q.name AND lane_key = v_lane;
    RETURN transitions.grant(v_id, p_agent, p_request, q);
END
$fn$;

-- Counts a lease made by take(): the job was pending and leasable, it now runs.
CREATE FUNCTION transitions.count_taken(p_job leased_job)
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_job.id IS NOT NULL THEN
        PERFORM transitions.count(p_job.queue, p_pending => -1, p_ready => -1, p_running => 1);
    END IF;
END
$fn$;
