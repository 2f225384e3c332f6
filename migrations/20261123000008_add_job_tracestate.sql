-- The W3C `tracestate` that goes with a job's `traceparent` (vendor-specific trace data),
-- stored at enqueue and handed to the agent with the lease, so the handler's TRACESTATE and
-- the webhook delivery continue the job's trace exactly. Nullable: most traces carry none.
-- Adding a nullable column without a default rewrites nothing; the lease functions return
-- whole `jobs` rows, so they carry it without being redefined.
ALTER TABLE jobs ADD COLUMN tracestate text;
