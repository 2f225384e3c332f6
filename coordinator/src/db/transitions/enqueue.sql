-- Enqueue: the jobs of one request (one job, or a batch of up to 1,000), all or nothing, in
-- one round trip. A job runs no earlier than its run_at, or its delay from now (the
-- database's clock), or now. Each new job starts `pending` (or, unkeyed with a run_at in the
-- future, `scheduled`); a keyed one joins its lane: a lane with no row gets it as its head
-- (ready, or scheduled until its run_at), an existing lane only counts it (it waits its
-- turn). An idempotency key already used in the queue returns the existing job instead (n8n
-- repeats requests), also when repeated within the batch, unless the queue's
-- idempotency_window_s has passed since that job was enqueued (the key is then free again);
-- with `replace`, a waiting job's payload is replaced by the repeat's. A queue pushed past
-- its max_pending raises LN429 and nothing is enqueued; a queue that does not exist raises
-- LN404 (the coordinator creates a queue before its first enqueue: this guards direct SQL
-- callers, whose jobs would otherwise be dropped without a word).
--
-- Returns one row per input, in input order: whether it was created (or its payload
-- replaced), its place in its lane (unfinished jobs ahead of it; -1 unkeyed or not
-- waiting) and in its queue (waiting or running jobs before it, from the counters), whether
-- it can be leased right now (wake an agent), and the job.
CREATE FUNCTION transitions.enqueue(p_queues text[], p_lanes text[], p_payloads text[],
    p_priorities int[], p_run_ats timestamptz[], p_delays_s bigint[], p_idempotency_keys text[],
    p_callbacks text[], p_failure_callbacks text[], p_traceparents text[],
    p_tracestates text[], p_max_attempts int[], p_timeouts_ms bigint[],
    p_soft_timeouts_ms bigint[], p_backoffs_initial_ms bigint[], p_backoffs_max_ms bigint[],
    p_replace boolean[])
RETURNS TABLE (o_created boolean, o_replaced boolean, o_position_in_lane bigint,
               o_position_in_queue bigint, o_ready boolean, o_job job_view)
-- Generic plans: planning its nine statements was half of a single job's enqueue (2.6 ms
-- to 1.45 ms on the dev server), and a batch of 1,000 runs the same either way (65-90 ms).
LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $fn$
DECLARE
    -- Ids are drawn first, in input order: each input then knows its row without relying
    -- on the order RETURNING emits rows in, and a lane's jobs of one batch keep their order.
    v_ids bigint[] := ARRAY(SELECT nextval(pg_get_serial_sequence('jobs', 'id'))
                            FROM generate_series(1, cardinality(p_queues)));
    v_rows jobs[];
    v_lanes lanes[];
    v_new_lanes text[];
    v_replaced bigint[];
    v_before jsonb;
    r record;
BEGIN
    -- Keys past their queue's window are freed, so the enqueue below makes a new job.
    UPDATE jobs j SET idempotency_key = NULL
    FROM unnest(p_queues, p_idempotency_keys) AS i(queue, idem), queues q
    WHERE q.name = i.queue AND q.idempotency_window_s IS NOT NULL AND i.idem IS NOT NULL
      AND j.queue = i.queue AND j.idempotency_key = i.idem
      AND j.created_at < now() - q.idempotency_window_s * interval '1 second';

    -- Each queue's waiting and running jobs before this request (positions in the queue).
    SELECT jsonb_object_agg(c.queue, c.n) INTO v_before FROM (
        SELECT queue, sum(scheduled + pending + running) AS n FROM queue_counts
        WHERE queue = ANY(p_queues) GROUP BY queue) c;

    WITH ins AS (
        INSERT INTO jobs (id, queue, lane_key, payload, priority, state, run_at, max_attempts,
                          idempotency_key, callback_url, failure_callback_url, traceparent,
                          tracestate, timeout_ms, soft_timeout_ms, backoff_initial_ms,
                          backoff_max_ms)
        SELECT v_ids[i.ord], coalesce(q.name, transitions.unknown_queue(i.queue)), i.lane,
               i.payload::json, i.priority,
               CASE WHEN i.lane IS NULL AND i.run_at > now() THEN 'scheduled'
                    ELSE 'pending' END::job_state,
               greatest(i.run_at, now()), coalesce(i.max_attempts, q.max_attempts), i.idem,
               i.cb, i.fcb, i.tp, i.ts, i.timeout_ms, i.soft_ms, i.bo_initial, i.bo_max
        FROM (SELECT u.*, coalesce(u.at, now() + u.delay_s * interval '1 second') AS run_at
              FROM unnest(p_queues, p_lanes, p_payloads, p_priorities, p_run_ats, p_delays_s,
                          p_idempotency_keys, p_callbacks, p_failure_callbacks, p_traceparents,
                          p_tracestates, p_max_attempts, p_timeouts_ms, p_soft_timeouts_ms,
                          p_backoffs_initial_ms, p_backoffs_max_ms)
                   WITH ORDINALITY AS u(queue, lane, payload, priority, at, delay_s, idem, cb,
                                        fcb, tp, ts, max_attempts, timeout_ms, soft_ms,
                                        bo_initial, bo_max, ord)) i
        LEFT JOIN queues q ON q.name = i.queue
        ORDER BY i.ord
        ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING *)
    SELECT array_agg(ROW(ins.*)::jobs ORDER BY ins.id) INTO v_rows FROM ins;

    -- Repeats asking for it replace the payload of their job while it still waits.
    WITH rep AS (
        UPDATE jobs j SET payload = i.payload::json
        FROM unnest(p_queues, p_idempotency_keys, p_payloads, p_replace) WITH ORDINALITY
             AS i(queue, idem, payload, replace, ord)
        WHERE i.replace AND i.idem IS NOT NULL AND j.queue = i.queue
          AND j.idempotency_key = i.idem AND j.state IN ('scheduled', 'pending')
          AND j.id <> ALL(v_ids)
        RETURNING j.id)
    SELECT array_agg(id) INTO v_replaced FROM rep;

    -- Keyed jobs join their lanes: one upsert for all, in key order, so concurrent batches
    -- lock lanes in the same order. DO UPDATE (not NOTHING) takes the row lock: a
    -- completion holding the lane finishes first and then sees these jobs.
    WITH up AS (
        INSERT INTO lanes AS l (queue, lane_key, head_job_id, state, priority, ready_at, queued)
        SELECT f.queue, f.lane_key, f.first[1],
               CASE WHEN f.run_at > now() THEN 'scheduled' ELSE 'ready' END::lane_state,
               f.priority, f.run_at, f.n
        FROM (SELECT n.queue, n.lane_key, array_agg(n.id ORDER BY n.id) AS first,
                     (array_agg(n.priority ORDER BY n.id))[1] AS priority,
                     (array_agg(n.run_at ORDER BY n.id))[1] AS run_at, count(*)::int AS n
              FROM unnest(v_rows) n WHERE n.lane_key IS NOT NULL
              GROUP BY n.queue, n.lane_key) f
        ORDER BY f.queue, f.lane_key
        ON CONFLICT (queue, lane_key) DO UPDATE SET queued = l.queued + EXCLUDED.queued
        RETURNING l.*, (xmax = 0) AS created)
    SELECT array_agg(ROW(up.queue, up.lane_key, up.head_job_id, up.state, up.priority,
                         up.ready_at, up.queued)::lanes),
           array_agg(up.queue || '/' || up.lane_key) FILTER (WHERE up.created)
    INTO v_lanes, v_new_lanes FROM up;

    -- Counts, per queue: the jobs by state, then the lanes this enqueue created.
    FOR r IN
        SELECT n.queue,
               count(*) FILTER (WHERE n.state = 'scheduled') AS scheduled,
               count(*) FILTER (WHERE n.state = 'pending') AS pending,
               count(*) FILTER (WHERE n.state = 'pending' AND n.lane_key IS NULL) AS ready,
               count(*) FILTER (WHERE l.state = 'scheduled') AS lane_scheduled,
               count(*) FILTER (WHERE l.state = 'ready') AS lane_ready
        FROM unnest(v_rows) n
        LEFT JOIN unnest(v_lanes) l ON l.queue = n.queue AND l.lane_key = n.lane_key
             AND l.head_job_id = n.id AND (l.queue || '/' || l.lane_key) = ANY(v_new_lanes)
        GROUP BY n.queue ORDER BY n.queue
    LOOP
        PERFORM transitions.count(r.queue, p_scheduled => r.scheduled + r.lane_scheduled,
            p_pending => r.pending - r.lane_scheduled, p_ready => r.ready + r.lane_ready);
        PERFORM transitions.check_max_pending(r.queue, r.scheduled + r.pending);
    END LOOP;

    RETURN QUERY
    SELECT n.id IS NOT NULL,
        coalesce(e.id = ANY(v_replaced), false),
        CASE WHEN n.id IS NOT NULL AND n.lane_key IS NOT NULL
             THEN (l.queued - count(n.id) OVER w + row_number() OVER w - 1)::bigint
             WHEN n.id IS NULL AND e.lane_key IS NOT NULL AND e.state = 'pending'
             THEN (SELECT count(*) FROM jobs x WHERE x.queue = e.queue
                     AND x.lane_key = e.lane_key AND x.id < e.id
                     AND x.state IN ('pending', 'running'))
             ELSE -1 END,
        CASE WHEN n.id IS NOT NULL
             THEN (coalesce((v_before ->> n.queue)::bigint, 0) + count(n.id) OVER wq
                   - 1)::bigint
             ELSE -1 END,
        coalesce(n.lane_key IS NULL AND n.state = 'pending'
                 OR l.head_job_id = n.id AND l.state = 'ready', false),
        transitions.view(coalesce(n, e))
    FROM unnest(p_queues, p_idempotency_keys) WITH ORDINALITY AS i(queue, idem, ord)
    LEFT JOIN unnest(v_rows) n ON n.id = v_ids[i.ord]
    LEFT JOIN unnest(v_lanes) l ON l.queue = n.queue AND l.lane_key = n.lane_key
    LEFT JOIN jobs e ON n.id IS NULL AND e.queue = i.queue AND e.idempotency_key = i.idem
    WINDOW w AS (PARTITION BY n.queue, n.lane_key, n.id IS NULL ORDER BY n.id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING),
           wq AS (PARTITION BY n.queue, n.id IS NULL ORDER BY n.id
                  ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    ORDER BY i.ord;
END
$fn$;

-- Raises LN429 when queue p_queue, having just received p_added pending jobs, holds more
-- than its max_pending (read from the counters: no count over the backlog). Concurrent
-- enqueues may each pass and overshoot the limit together (documented).
CREATE FUNCTION transitions.check_max_pending(p_queue text, p_added bigint)
RETURNS void LANGUAGE plpgsql AS $fn$
DECLARE
    v_max bigint;
    v_now bigint;
BEGIN
    SELECT max_pending INTO v_max FROM queues WHERE name = p_queue;
    IF v_max IS NULL OR p_added = 0 THEN
        RETURN;
    END IF;
    SELECT sum(scheduled + pending) INTO v_now FROM queue_counts WHERE queue = p_queue;
    IF v_now > v_max THEN
        RAISE EXCEPTION 'queue % is full: % more pending jobs would exceed its max_pending of %; retry later',
            p_queue, p_added, v_max USING ERRCODE = 'LN429';
    END IF;
END
$fn$;

-- Raises LN404 for p_queue, which has no row in `queues`. Typed as text so the enqueue can
-- call it in place of the queue's name: it runs only for a missing queue.
CREATE FUNCTION transitions.unknown_queue(p_queue text)
RETURNS text LANGUAGE plpgsql AS $fn$
BEGIN
    RAISE EXCEPTION 'queue % does not exist; create it first', p_queue USING ERRCODE = 'LN404';
END
$fn$;
