#!/usr/bin/env python3
"""Example Lanes handler that fails, to show how failures are reported.

Payload: {"fail": "permanent" | "transient", "message": "why", "sleep_ms": 0}

- "permanent": exits 65 (EX_DATAERR) — the job ends `failed` at once, no retry
  (e.g. an invoice that can never be imported: malformed, unknown establishment).
- "transient" (default): exits 1 — the job is retried with backoff until its attempts run
  out (e.g. the accounting API was down).

Either way the end of stderr (the last 4 KiB) becomes the job's `last_error`.
"""

import json
import sys
import time

EX_DATAERR = 65


def main():
    payload = json.load(sys.stdin)
    time.sleep(int(payload.get("sleep_ms", 0)) / 1000)
    kind = payload.get("fail", "transient")
    message = payload.get("message", f"{kind} failure")
    print(f"importing invoice {payload.get('invoice_id', '?')}...", file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    return EX_DATAERR if kind == "permanent" else 1


if __name__ == "__main__":
    sys.exit(main())
