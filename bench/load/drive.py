#!/usr/bin/env python3
"""Starts every pending project at once and watches the run until all end.

While it runs, every 100 ms: the latency of a trivial query on its own
connection, the HTTP requests in flight (running jobs of the http lane),
and the anonymous memory of every hagenkit worker.  Prints one JSON object.

    drive.py DSN PGDATA [PID ...]     (PIDs: the test servers, counted as ours)
"""
import json
import os
import sys
import time

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import cpu  # noqa: E402


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
    pgdata = sys.argv[2]
    servers = [int(x) for x in sys.argv[3:]]
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

    meter = cpu.Meter([os.getpid(), cpu.postmaster_pid(pgdata)] + servers)
    # WAVES=N: the projects are started in N waves, each once the one before
    # has ended (so that the later ones find the generation times of the
    # earlier ones in the table, as a server that has been running does).
    waves = int(os.environ.get("WAVES", "1"))
    cur.execute("SELECT array_agg(id::text ORDER BY created_at, id) FROM hagen.video_project WHERE status = 'pending'")
    pending = cur.fetchone()[0]
    groups = [pending[i * len(pending) // waves:(i + 1) * len(pending) // waves] for i in range(waves)]
    projects = len(pending)
    t0 = time.monotonic()
    latencies, inflight_peak, samples = [], 0, 0
    wave = 0
    cur.execute("SELECT count(hagen.start_video(id)) FROM unnest(%s::uuid[]) id", (groups[0],))
    while True:
        s = time.monotonic()
        pcur.execute("SELECT 1")
        pcur.fetchone()
        latencies.append((time.monotonic() - s) * 1000)
        # Requests in flight: running jobs of the http lane, but those
        # whose step only waits (their effect is a no-op, no request).
        cur.execute("""SELECT count(*) FILTER (WHERE status = 'running' AND lane = 'http'
                                              AND step <> 'upload_parts' AND NOT (kind = 'compile' AND step = 'fetch')),
                              (SELECT count(*) FROM hagen.video_project WHERE status IN ('generating', 'compiling'))
                       FROM hagen.job""")
        running, live = cur.fetchone()
        inflight_peak = max(inflight_peak, running)
        samples += 1
        if samples % 10 == 0:
            for pid, _ in workers:
                mem[pid].append(rss_kb(pid))
        if live == 0:
            wave += 1
            if wave == waves:
                break
            cur.execute("SELECT count(hagen.start_video(id)) FROM unnest(%s::uuid[]) id", (groups[wave],))
        time.sleep(0.1)
    wall = time.monotonic() - t0
    cpu_use = meter.stop()
    cur.execute("SELECT status, count(*) FROM hagen.video_project GROUP BY 1 ORDER BY 1")
    statuses = dict(cur.fetchall())
    cur.execute("""SELECT count(*), count(*) FILTER (WHERE kind IN ('clip', 'transition')),
                          count(*) FILTER (WHERE kind = 'compile'), sum(total_attempts)
                   FROM hagen.job""")
    jobs, gen_jobs, compiles, effects = cur.fetchone()
    # The generation phase: from the start to the end of the last clip or
    # transition job; the http lane's effects in it.
    cur.execute("""SELECT extract(epoch FROM max(finished_at) - min(created_at)),
                          sum(total_attempts) FILTER (WHERE lane = 'http')
                   FROM hagen.job WHERE kind IN ('clip', 'transition', 'upload_part')""")
    gen_wall, gen_effects = cur.fetchone()
    # Polls per clip: the answers "still queued / generating" each job kept
    # count of, plus the one that found it done.
    cur.execute("""SELECT round(avg(coalesce((state ->> 'polls')::int, 0) + 1), 2),
                          percentile_cont(0.5) WITHIN GROUP (ORDER BY coalesce((state ->> 'polls')::int, 0) + 1),
                          max(coalesce((state ->> 'polls')::int, 0) + 1),
                          round(avg(extract(epoch FROM finished_at - created_at))::numeric, 1)
                   FROM hagen.job WHERE kind IN ('clip', 'transition') AND status = 'succeeded'""")
    polls_avg, polls_median, polls_max, job_s = cur.fetchone()
    per_wave = []
    for g in groups:
        cur.execute("""SELECT round(avg(coalesce((state ->> 'polls')::int, 0) + 1), 2),
                              round(avg(extract(epoch FROM finished_at - created_at))::numeric, 1)
                       FROM hagen.job WHERE kind IN ('clip', 'transition') AND status = 'succeeded'
                         AND project_id = ANY(%s::uuid[])""", (g,))
        a, js = cur.fetchone()
        per_wave.append({"projects": len(g), "polls_per_clip": float(a), "job_s": float(js)})
    cur.execute("SELECT count(*) FROM hagen.job_log")
    log_rows = cur.fetchone()[0]
    cpu_w = {pid: cpu_s(pid) - cpu0[pid] for pid, _ in workers}
    dispatchers = [pid for pid, t in workers if t == "hagenkit dispatcher"]
    # Bookkeeping: the time spent in the engine's SQL, i.e. in the protocol
    # statements the workers run (claim_jobs, next_due, complete_job(s),
    # heartbeat, fail_job, recover_jobs), timed by pg_stat_statements as
    # top-level statements.  (Summing pg_stat_user_functions instead counts
    # a function called inside another twice, and its instrumentation of
    # every nested call slows them down; it is kept for the breakdown.)
    cur.execute("""SELECT coalesce(sum(total_exec_time), 0),
                          string_agg(substring(query from 'hagen\\.([a-z_]+)\\(') || '=' || calls, ' ')
                   FROM pg_stat_statements
                   WHERE query ~ '^SELECT (job_id, token, effect FROM )?hagen\\.(claim_jobs|next_due|complete_jobs?|heartbeat|fail_job|recover_jobs)\\('""")
    book_ms, calls = cur.fetchone()
    cur.execute("""SELECT funcname, calls, round(self_time::numeric, 1), round(total_time::numeric, 1)
                   FROM pg_stat_user_functions WHERE schemaname = 'hagen' ORDER BY self_time DESC LIMIT 8""")
    top = [list(map(str, r)) for r in cur.fetchall()]
    curve = mem[dispatchers[0]]
    dispatcher_cpu = sum(cpu_w[p] for p in dispatchers)
    step = max(1, len(curve) // 10)
    out = {
        "projects": projects, "statuses": statuses, "wall_s": round(wall, 1),
        "jobs": jobs, "generation_jobs": gen_jobs, "compile_jobs": compiles, "effects": int(effects),
        "jobs_per_s": round(jobs / wall, 1), "effects_per_s": round(int(effects) / wall, 1),
        "generation_phase_s": round(float(gen_wall), 1),
        "generation_effects_per_s": round(int(gen_effects) / float(gen_wall), 1),
        "polls_per_clip": {"mean": float(polls_avg), "median": float(polls_median), "max": polls_max},
        "waves": per_wave,
        "generation_job_s_mean": float(job_s),
        "log_rows": log_rows, "log_rows_per_effect": round(log_rows / int(effects), 2),
        "max_inflight": max_inflight, "inflight_peak": inflight_peak,
        "select1_ms": {"p50": round(pct(latencies, 50), 2), "p99": round(pct(latencies, 99), 2),
                       "max": round(max(latencies), 2), "samples": len(latencies)},
        "bookkeeping_ms": round(float(book_ms), 1), "bookkeeping_calls": calls,
        "top_functions_self_ms": [" ".join(r) for r in top],
        "bookkeeping_ms_per_job": round(float(book_ms) / jobs, 2),
        "bookkeeping_ms_per_effect": round(float(book_ms) / int(effects), 3),
        "dispatcher_rss_kb_curve": [curve[i] for i in range(0, len(curve), step)] + [curve[-1]],
        "dispatchers": len(dispatchers),
        "dispatcher_cpu_s": round(dispatcher_cpu, 2),
        "dispatcher_cpu_ms_per_effect": round(dispatcher_cpu * 1000 / int(effects), 3),
        "cpu": cpu_use,
        "worker_rss_kb": {t + " " + str(pid): {"start": mem[pid][0], "peak": max(m for m in mem[pid] if m),
                                               "end": mem[pid][-1]} for pid, t in workers},
        "worker_cpu_s": {t + " " + str(pid): round(cpu_w[pid], 2) for pid, t in workers},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
