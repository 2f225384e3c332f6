#!/usr/bin/env python3
"""Example Lanes handler: imports one invoice.

Run by the agent once per job:

    agent --queues invoice_import --exec "python3 agent/examples/import_invoice.py"

The contract (docs/handlers.md): the payload JSON arrives on stdin, the job's metadata in
LANES_JOB_* environment variables; progress goes to stderr as `LANES_PROGRESS <percent>
<message>` lines; the result JSON goes to stdout; the exit code says how it went (0 done,
65 permanent failure, anything else: try again later).

Payload: {"invoice_id": "INV-1", "establishment": "resto-1", "lines": 12, "sleep_ms": 300}
`sleep_ms` (default 300) stands in for the real import work; `steps` (default 3) is how many
progress reports are made along the way.
"""

import json
import os
import sys
import time

EX_DATAERR = 65  # permanent failure: the job will not be retried


def progress(percent, message):
    print(f"LANES_PROGRESS {percent} {message}", file=sys.stderr, flush=True)


def main():
    try:
        payload = json.load(sys.stdin)
        sleep_ms = int(payload.get("sleep_ms", 300))
        steps = max(1, int(payload.get("steps", 3)))
    except (ValueError, TypeError, AttributeError) as e:
        print(f"invalid invoice payload: {e}", file=sys.stderr)
        return EX_DATAERR

    invoice = payload.get("invoice_id", "?")
    for step in range(1, steps + 1):
        time.sleep(sleep_ms / 1000 / steps)
        progress(round(step * 100 / steps), f"invoice {invoice}: step {step}/{steps}")

    json.dump(
        {
            "invoice_id": invoice,
            "establishment": payload.get("establishment"),
            "lines_imported": payload.get("lines", 0),
            "job_id": int(os.environ["LANES_JOB_ID"]),
            "attempt": int(os.environ["LANES_JOB_ATTEMPT"]),
            # Pass this to your own database writes to fence out a stale run of the job.
            "fencing_token": int(os.environ["LANES_JOB_FENCING_TOKEN"]),
        },
        sys.stdout,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
