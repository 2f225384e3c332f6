-- Two indexes for the operator's views of one queue among busy others. Each is built in the
-- migration's transaction: writes to `jobs` wait for the build, which reads the table once
-- (0.1 s and 0.8 s per million jobs on the benchmark machine).

-- A queue's failed jobs, by id: listing them and the bulk actions (retry or cancel them all)
-- look for a handful of failed jobs among millions of completed ones. Without it both read
-- the whole table through the primary key or a sequential scan: 57-90 ms at 1 million
-- finished jobs, growing with retention; with it, under 1 ms. Small: only failed jobs are in
-- it, and only a transition into or out of `failed` touches it.
CREATE INDEX jobs_failed ON jobs (queue, id) WHERE state = 'failed';

-- A queue's recently finished jobs: GetStats' mean run time (transitions.recent_run_ms) of a
-- quiet queue no longer walks every other queue's finished jobs of the hour (270 ms at
-- 1 million, every GetStats: the gateway asks every 3 s). One more index entry per finished
-- job; jobs_finished (finished_at) stays for the views across every queue.
CREATE INDEX jobs_queue_finished ON jobs (queue, finished_at) WHERE state IN ('completed', 'failed');
