#!/usr/bin/env python3
"""Starts every pending project at once and watches the run until all end.

While it runs, every 100 ms: the latency of a trivial query on its own
connection, the HTTP requests in flight (running jobs of the http lane),
and the anonymous memory of every hagenkit worker.  Prints one JSON object.
"""
import json
import sys
import time

import psycopg2


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_s(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / 100.0
    except OSError:
        return 0.0


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else None


def main():
    dsn = sys.argv[1]
    control = psycopg2.connect(dsn)
    control.autocommit = True
    probe = psycopg2.connect(dsn)
    probe.autocommit = True
    cur = control.cursor()
    pcur = probe.cursor()
    cur.execute("SELECT pid, backend_type FROM pg_stat_activity WHERE backend_type LIKE 'hagenkit%'")
    workers = cur.fetchall()
    cur.execute("SELECT current_setting('hagen.max_inflight')::int")
    max_inflight = cur.fetchone()[0]
    cpu0 = {pid: cpu_s(pid) for pid, _ in workers}
    mem = {pid: [rss_kb(pid)] for pid, _ in workers}

    t0 = time.monotonic()
    cur.execute("SELECT count(hagen.start_video(id)) FROM hagen.video_project WHERE status = 'pending'")
    projects = cur.fetchone()[0]
    latencies, inflight_peak, samples = [], 0, 0
    while True:
        s = time.monotonic()
        pcur.execute("SELECT 1")
        pcur.fetchone()
        latencies.append((time.monotonic() - s) * 1000)
        cur.execute("""SELECT count(*) FILTER (WHERE status = 'running' AND lane = 'http'),
                              (SELECT count(*) FROM hagen.video_project WHERE status IN ('generating', 'compiling'))
                       FROM hagen.job""")
        running, live = cur.fetchone()
        inflight_peak = max(inflight_peak, running)
        samples += 1
        if samples % 10 == 0:
            for pid, _ in workers:
                mem[pid].append(rss_kb(pid))
        if live == 0:
            break
        time.sleep(0.1)
    wall = time.monotonic() - t0
    cur.execute("SELECT status, count(*) FROM hagen.video_project GROUP BY 1 ORDER BY 1")
    statuses = dict(cur.fetchall())
    cur.execute("""SELECT count(*), count(*) FILTER (WHERE kind IN ('clip', 'transition')),
                          count(*) FILTER (WHERE kind = 'compile'), sum(total_attempts)
                   FROM hagen.job""")
    jobs, gen_jobs, compiles, effects = cur.fetchone()
    cpu = {pid: cpu_s(pid) - cpu0[pid] for pid, _ in workers}
    dispatcher = [pid for pid, t in workers if t == "hagenkit dispatcher"][0]
    # Bookkeeping: the time spent in the engine's SQL (claims, outcomes,
    # heartbeats), from track_functions.
    # complete_jobs only loops over complete_job, whose time is counted.
    cur.execute("""SELECT coalesce(sum(total_time), 0), string_agg(funcname || '=' || calls, ' ' ORDER BY funcname)
                   FROM pg_stat_user_functions WHERE schemaname = 'hagen'
                   AND funcname IN ('claim_jobs', 'complete_job', 'heartbeat', 'fail_job')""")
    book_ms, calls = cur.fetchone()
    cur.execute("""SELECT funcname, calls, round(self_time::numeric, 1), round(total_time::numeric, 1)
                   FROM pg_stat_user_functions WHERE schemaname = 'hagen' ORDER BY self_time DESC LIMIT 8""")
    top = [list(map(str, r)) for r in cur.fetchall()]
    curve = mem[dispatcher]
    step = max(1, len(curve) // 10)
    out = {
        "projects": projects, "statuses": statuses, "wall_s": round(wall, 1),
        "jobs": jobs, "generation_jobs": gen_jobs, "compile_jobs": compiles, "effects": int(effects),
        "jobs_per_s": round(jobs / wall, 1), "effects_per_s": round(int(effects) / wall, 1),
        "max_inflight": max_inflight, "inflight_peak": inflight_peak,
        "select1_ms": {"p50": round(pct(latencies, 50), 2), "p99": round(pct(latencies, 99), 2),
                       "max": round(max(latencies), 2), "samples": len(latencies)},
        "bookkeeping_ms": round(float(book_ms), 1), "bookkeeping_calls": calls,
        "top_functions_self_ms": [" ".join(r) for r in top],
        "bookkeeping_ms_per_job": round(float(book_ms) / jobs, 2),
        "bookkeeping_ms_per_effect": round(float(book_ms) / int(effects), 3),
        "dispatcher_rss_kb_curve": [curve[i] for i in range(0, len(curve), step)] + [curve[-1]],
        "dispatcher_cpu_s": round(cpu[dispatcher], 2),
        "dispatcher_cpu_ms_per_effect": round(cpu[dispatcher] * 1000 / int(effects), 3),
        "worker_rss_kb": {t + " " + str(pid): {"start": mem[pid][0], "peak": max(m for m in mem[pid] if m),
                                               "end": mem[pid][-1]} for pid, t in workers},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
