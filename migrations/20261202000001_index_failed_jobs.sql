-- A queue's failed jobs, by id: the operator's views and bulk actions (list the failed jobs,
-- retry or cancel them all) look for a handful of failed jobs among millions of completed
-- ones. Without it both read the whole table through the primary key or a sequential scan:
-- 57-90 ms at 1 million finished jobs, growing with retention; with it, under 1 ms.
-- Small: only failed jobs are in it, and only a transition into or out of `failed` touches it.
-- Built in the migration's transaction: writes to `jobs` wait for the build, which reads the
-- table once (about 0.1 s per million jobs on the benchmark machine).
CREATE INDEX jobs_failed ON jobs (queue, id) WHERE state = 'failed';
