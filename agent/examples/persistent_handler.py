#!/usr/bin/env python3
"""Example persistent Lanes handler: ONE process serves every job of its agent, so Python
starts and imports once instead of once per job.

    agent --queues invoice_import --persistent \\
          --exec "python3 agent/examples/persistent_handler.py"

The line protocol (docs/handlers.md, "Persistent handlers"): the agent writes each job as
one JSON line on stdin; the handler answers on stdout with zero or more progress lines and
then exactly one result or error line. Logs go to stderr. Between jobs the process waits on
stdin; end-of-file on stdin means "exit".

Payload: {"invoice_id": "INV-1", "sleep_ms": 300, "steps": 3}, plus "fail": "permanent" or
"transient" to see both kinds of failure.

At the job's soft time limit the agent sends SIGTERM (`--soft-signal`): here it raises
SoftTimeLimit inside the running job, which answers with a retryable error, and the process
lives on for the next job.
"""

import json
import os
import signal
import sys
import time

# The protocol's channel. Anything else printed (a library's print()) goes to stderr, where
# the agent logs it, instead of being mistaken for an answer.
PROTOCOL = sys.stdout
sys.stdout = sys.stderr


class PermanentError(Exception):
    """A job that can never succeed (bad input): failed at once, no retry."""


class SoftTimeLimit(Exception):
    """Raised in the running job when the agent signals its soft time limit."""


running = False


def on_soft_limit(signum, frame):
    # A signal that arrives between jobs (just after an answer) concerns no job.
    if running:
        raise SoftTimeLimit()


signal.signal(signal.SIGTERM, on_soft_limit)


def send(message):
    PROTOCOL.write(json.dumps(message) + "\n")
    PROTOCOL.flush()


def handle(job, progress):
    """One job: the real work goes here. Returns the result (any JSON value)."""
    payload = job["payload"]
    if not isinstance(payload, dict):
        raise PermanentError("the payload must be a JSON object")
    if payload.get("fail") == "permanent":
        raise PermanentError(f"invoice {payload.get('invoice_id', '?')} is malformed")
    if payload.get("fail") == "transient":
        raise RuntimeError("the accounting API is down")
    steps = max(1, int(payload.get("steps", 3)))
    for step in range(1, steps + 1):
        time.sleep(int(payload.get("sleep_ms", 300)) / 1000 / steps)
        progress(round(step * 100 / steps), f"step {step}/{steps}")
    return {
        "invoice_id": payload.get("invoice_id"),
        "job_id": job["id"],
        "fencing_token": job["fencing_token"],
        "pid": os.getpid(),
    }


def main():
    global running
    print(f"persistent handler ready (pid {os.getpid()})", file=sys.stderr, flush=True)
    for line in sys.stdin:
        try:
            job = json.loads(line)
        except ValueError:
            continue
        if job.get("type") != "job":
            continue
        job_id = job["id"]

        def progress(percent, message=""):
            send({"type": "progress", "id": job_id, "percent": percent, "message": message})

        running = True
        try:
            reply = {"type": "result", "id": job_id, "result": handle(job, progress)}
        except PermanentError as e:
            reply = {"type": "error", "id": job_id, "error": str(e), "retryable": False}
        except SoftTimeLimit:
            reply = {"type": "error", "id": job_id, "error": "stopped at the soft time limit"}
        except Exception as e:  # anything else: retry later
            reply = {"type": "error", "id": job_id, "error": f"{type(e).__name__}: {e}"}
        finally:
            running = False
        send(reply)


if __name__ == "__main__":
    main()
