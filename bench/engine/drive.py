#!/usr/bin/env python3
"""Drives the job engine with no network: plays the part of the dispatcher
and of an instant Fal.ai + S3 (and of the compile workers), answering every
effect in-process, and times the engine's SQL alone.

    drive.py DSN [--polls N] [--batch N]

Every pending project is started; then, round after round, the driver does
what a worker does: hagen.claim_jobs(lane, batch) and hagen.next_due(lane)
in one transaction, and hands the outcomes back with hagen.complete_jobs()
in another; when no lane had work it sleeps until the next job falls due,
as the dispatcher does (its claim waits for next_due).  A poll is answered IN_QUEUE once, IN_PROGRESS N times, then
COMPLETED.  Two figures: the wall time spent in those statements (as the
client sees it: server time plus one local round trip per statement, shared
by up to `batch` effects), and the CPU time of the backend that ran them
(less sensitive to other processes competing for the CPU).  Prints one JSON
object.
"""
import argparse
import json
import time

import os
import sys

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import cpu  # noqa: E402


class Provider:
    """Instant answers to effects, chosen from the effect itself."""

    def __init__(self, polls):
        self.polls = polls
        self.seen = {}
        self.n = 0

    def answer(self, eff):
        if eff.get("type") == "compile" and "outputs" in eff:
            # A compile step (0.4): the outputs are stored by the job's own
            # storing steps afterwards.
            return {"status": "ok", "result": {"duration": 5.0 * len(eff["inputs"]), "mode": "copy",
                                               "size": 1000000, "thumbnail_size": 20000}}
        if eff.get("type") == "compile":
            # The compile as one effect (0.3): fetch, compile and store in C.
            return {"status": "ok", "final_key": eff["output"]["key"],
                    "thumbnail_key": eff["thumbnail"]["key"],
                    "result": {"duration": 5.0 * len(eff["segments"]), "mode": "copy"}}
        if eff.get("type") == "remove":
            return {"status": "ok", "removed": True}
        if eff.get("type") == "image":
            return {"status": "ok", "result": {"width": 1280, "height": 720, "bytes": 90000,
                                               "source": {"width": 1280, "height": 720, "orientation": "1"}}}
        if eff.get("type") == "noop":
            return {"type": "noop"}
        method, url = eff.get("method", "GET"), eff.get("url", "")
        if "save_to" in eff and "/cdn/" not in url and "/files/" not in url:
            return {"status": 200, "headers": {"content-type": "image/jpeg"},
                    "file": eff["save_to"], "bytes": 48000, "elapsed_ms": 1}
        if url.endswith("/storage/upload/initiate?storage_type=fal-cdn-v3"):
            self.n += 1
            name = eff["body"]["file_name"]
            return {"status": 200, "body_text": json.dumps(
                {"upload_url": "http://fal.test/cdn/upload/u%d" % self.n,
                 "file_url": "http://fal.test/cdn/files/f%d/%s" % (self.n, name)})}
        if "/cdn/upload/" in url:
            return {"status": 200}
        if "save_to" in eff:
            return {"status": 200, "file": eff["save_to"], "bytes": 123456}
        if "body_file" in eff:
            return {"status": 200, "headers": {"etag": '"abc"'}}
        if method == "POST" and "/queue/" in url:
            self.n += 1
            rid = "r%d" % self.n
            base = url.split("/queue/")[0] + "/queue/fal-ai/kling-video/requests/" + rid
            self.seen[rid] = 0
            return {"status": 200, "headers": {"x-fal-request-id": rid}, "body_text": json.dumps(
                {"status": "IN_QUEUE", "request_id": rid, "status_url": base + "/status",
                 "response_url": base, "cancel_url": base + "/cancel", "queue_position": 0})}
        if method == "GET" and "/status" in url:
            rid = url.split("/requests/")[1].split("/")[0]
            k = self.seen.get(rid, 0)
            self.seen[rid] = k + 1
            if k == 0:
                return {"status": 202, "body_text": '{"status": "IN_QUEUE", "queue_position": 0}'}
            if k <= self.polls:
                return {"status": 202, "body_text": '{"status": "IN_PROGRESS", "logs": null}'}
            return {"status": 200, "body_text":
                    '{"status": "COMPLETED", "logs": null, "metrics": {"inference_time": 3.4}}'}
        if method == "GET" and "/requests/" in url:
            rid = url.split("/requests/")[1].split("/")[0]
            return {"status": 200, "body_text": json.dumps(
                {"video": {"url": "http://fal.test/files/%s/output.mp4" % rid, "content_type": "video/mp4"}})}
        if method == "PUT" and url.endswith("/cancel"):
            return {"status": 202, "body_text": '{"status": "CANCELLATION_REQUESTED"}'}
        raise RuntimeError("no answer for %s %s" % (method, url))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dsn")
    ap.add_argument("--polls", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pgdata", help="to count the server's CPU as ours")
    ap.add_argument("--pidfile", help="writes the pid of the driver's backend there (for perf)")
    args = ap.parse_args()
    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    prov = Provider(args.polls)
    if args.pidfile:
        cur.execute("SELECT pg_backend_pid()")
        with open(args.pidfile, "w") as f:
            f.write(str(cur.fetchone()[0]))
        time.sleep(1)

    cur.execute("SELECT pg_backend_pid()")
    backend = cur.fetchone()[0]
    meter = cpu.Meter([os.getpid()] + ([cpu.postmaster_pid(args.pgdata)] if args.pgdata else []))
    t0 = time.monotonic()
    cur.execute("SELECT count(hagen.start_video(id)) FROM hagen.video_project WHERE status = 'pending'")
    projects = cur.fetchone()[0]
    start_s = time.monotonic() - t0
    # The backend's CPU counts from here: start_video is not the engine's.
    backend_cpu0 = cpu.tree_cpu_s([backend])

    sql_s = 0.0
    effects = 0
    statements = 0
    idle_rounds = 0
    while True:
        got = 0
        soonest = None
        for lane in ("http", "compile"):
            s = time.monotonic()
            cur.execute("BEGIN")
            cur.execute("SELECT job_id, token, effect FROM hagen.claim_jobs(%s, %s)", (lane, args.batch))
            rows = cur.fetchall()
            cur.execute("SELECT hagen.next_due(%s)", (lane,))
            due = cur.fetchone()[0]
            cur.execute("COMMIT")
            if due is not None and (soonest is None or due < soonest):
                soonest = due
            sql_s += time.monotonic() - s
            statements += 2
            if not rows:
                continue
            outs = [{"job_id": j, "token": t, "outcome": prov.answer(e)} for j, t, e in rows]
            payload = json.dumps(outs)
            s = time.monotonic()
            cur.execute("SELECT hagen.complete_jobs(%s::jsonb)", (payload,))
            cur.fetchone()
            sql_s += time.monotonic() - s
            statements += 1
            effects += len(rows)
            got += len(rows)
        if got == 0:
            cur.execute("SELECT count(*) FROM hagen.video_project WHERE status IN ('generating', 'compiling')")
            if cur.fetchone()[0] == 0:
                break
            idle_rounds += 1
            # As the dispatcher does: sleep until the next job falls due
            # (hagen.next_due), rather than claim in vain meanwhile.
            time.sleep(min(max(soonest if soonest is not None else 2, 1), 100) / 1000.0)
    wall = time.monotonic() - t0
    cpu_use = meter.stop()
    backend_cpu = cpu.tree_cpu_s([backend]) - backend_cpu0
    cur.execute("SELECT status, count(*) FROM hagen.video_project GROUP BY 1 ORDER BY 1")
    statuses = dict(cur.fetchall())
    cur.execute("SELECT count(*), sum(total_attempts) FROM hagen.job")
    jobs, attempts = cur.fetchone()
    cur.execute("SELECT kind, count(*) FROM hagen.job GROUP BY 1 ORDER BY 1")
    kinds = dict(cur.fetchall())
    cur.execute("SELECT count(*) FROM hagen.job_log")
    logs = cur.fetchone()[0]
    cur.execute("""SELECT funcname || ' ' || calls || ' ' || round(self_time::numeric) || ' ' || round(total_time::numeric)
                   FROM pg_stat_user_functions WHERE schemaname = 'hagen' ORDER BY self_time DESC LIMIT 30""")
    top = [r[0] for r in cur.fetchall()]
    cur.execute("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'")
    statements_top = []
    if cur.fetchone()[0]:
        cur.execute("""SELECT calls, round(total_exec_time::numeric), round((total_exec_time / calls * 1000)::numeric),
                              left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
                       FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 25""")
        statements_top = ["%s calls %s ms %s us: %s" % r for r in cur.fetchall()]
    print(json.dumps({
        "projects": projects, "statuses": statuses, "jobs": jobs, "jobs_by_kind": kinds, "effects": effects,
        "attempts": int(attempts), "log_rows": logs,
        "start_video_s": round(start_s, 2), "wall_s": round(wall, 2),
        "engine_sql_s": round(sql_s, 2), "statements": statements, "idle_rounds": idle_rounds,
        "engine_sql_ms_per_effect": round(sql_s * 1000 / max(effects, 1), 3),
        "backend_cpu_s": round(backend_cpu, 2),
        "backend_cpu_ms_per_effect": round(backend_cpu * 1000 / max(effects, 1), 3),
        "log_rows_per_effect": round(logs / max(effects, 1), 2),
        "cpu": cpu_use,
        "top_functions_calls_self_ms_total_ms": top,
        "top_statements": statements_top,
    }, indent=1))


if __name__ == "__main__":
    main()
