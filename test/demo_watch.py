#!/usr/bin/env python3
"""Draws a project's progress bar from LISTEN hagen_video until it ends.

Used by test/demo.sh: the bar moves on the notifications the extension
sends at every status or progress change, not by polling.  Prints the final
status on the last line and exits 0, or 1 after --timeout seconds.

With --record FILE it also writes, as JSON, each change of a clip or
transition job's provider status (IN_QUEUE, IN_PROGRESS, ...) that the job
table showed, with the database's clock: the job log records step changes
only, and the demo's timeline splits a job's wait into queue and generation
with these.  The table is read at every notification and every 0.1 s.
"""
import argparse
import json
import select
import sys
import time

import psycopg2
import psycopg2.extensions


def bar(percent, width=40):
    filled = int(round(width * min(max(percent, 0), 100) / 100))
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--project", required=True)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--record", help="write the provider status changes seen to this JSON file")
    args = ap.parse_args()

    conn = psycopg2.connect(args.dsn)
    conn.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_AUTOCOMMIT)
    cur = conn.cursor()
    cur.execute("LISTEN hagen_video")
    # The state before the first notification (it may have moved already).
    cur.execute("SELECT status, progress FROM hagen.video_project WHERE id = %s", (args.project,))
    status, progress = cur.fetchone()
    deadline = time.monotonic() + args.timeout
    events = 0
    tty = sys.stdout.isatty()
    last_line = None
    seen, changes = {}, []

    def sample():
        cur.execute("SELECT clock_timestamp(), id, state ->> 'provider_status' FROM hagen.job"
                    " WHERE project_id = %s AND kind IN ('clip', 'transition')", (args.project,))
        for at, job, st in cur.fetchall():
            if st is not None and seen.get(job) != st:
                seen[job] = st
                changes.append({"job_id": job, "provider_status": st, "at": at.isoformat()})

    while True:
        if args.record:
            sample()
        line = "%s %5.1f%%  %-10s %s" % (bar(float(progress.get("percent", 0))), float(progress.get("percent", 0)),
                                        status, progress.get("label", ""))
        if line != last_line:
            sys.stdout.write(("\r" + line.ljust(110)) if tty else line + "\n")
            sys.stdout.flush()
            last_line = line
        if status in ("completed", "failed", "canceled"):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            print("\ntimed out waiting for the project", file=sys.stderr)
            return 1
        if select.select([conn], [], [], min(left, 0.1 if args.record else 5)) == ([], [], []):
            continue
        conn.poll()
        while conn.notifies:
            n = conn.notifies.pop(0)
            payload = json.loads(n.payload)
            if payload.get("project_id") == args.project:
                status, progress = payload["status"], payload["progress"]
                events += 1
    if tty:
        sys.stdout.write("\n")
    print("%s after %d notifications" % (status, events))
    if args.record:
        with open(args.record, "w") as f:
            json.dump(changes, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
