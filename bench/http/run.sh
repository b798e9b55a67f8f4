#!/usr/bin/env bash
# HTTP effects per second the dispatcher sustains against a local server
# that answers at once, and the dispatcher's peak memory, beside the same
# requests through curl (a plain loop, and curl's own parallel mode).
#
#   bash bench/http/run.sh [N_JOBS] [MAX_INFLIGHT] [DISPATCHERS]
#
# Each job is a provider cancel (one PUT): claimed, sent, answered, and its
# outcome recorded (job row, two log rows) in its own transaction: the full
# bookkeeping of one effect.  Run as root after make install.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-20000}
inflight=${2:-64}
dispatchers=${3:-1}
work=$(mktemp -d /tmp/hagenkit-bench.XXXXXX)
chown postgres "$work"
pids=()
cleanup() {
	su postgres -c "pg_ctl -D '$work/pgdata' -m fast stop" >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
export PATH="$(pg_config --bindir):$PATH"

node bench/http/instant_server.js >"$work/server.out" 2>"$work/server.err" &
pids+=($!)
for _ in $(seq 1 50); do grep -q listening "$work/server.out" && break; sleep 0.1; done
url=$(sed -nE 's/.*"listening":"([^"]+)".*/\1/p' "$work/server.out")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su postgres -c "initdb -D '$work/pgdata' -A trust -U postgres" >/dev/null
cat >>"$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit'
hagen.database = 'postgres'
hagen.fal_key = 'bench:key'
hagen.fal_queue_url = '$url/queue'
hagen.max_inflight = $inflight
hagen.dispatchers = $dispatchers
shared_buffers = '256MB'
synchronous_commit = off
CONF
su postgres -c "pg_ctl -D '$work/pgdata' -l '$work/server.log' -w start" >/dev/null
psql_() { su postgres -c "psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 -c \"$1\""; }
psql_ "CREATE EXTENSION hagenkit"
project=$(psql_ "SELECT hagen.create_project('bench')")
dpids=$(psql_ "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'")
dpid=${dpids%% *}
rss_before=$(awk "/RssAnon/ {print \$2}" /proc/$dpid/status)
# The dispatchers' CPU time (user + system, clock ticks): they run the
# claim and outcome SQL themselves, so this is the cost of an effect
# whatever else loads the machine.
cpu_ticks() { local t=0; for p in $dpids; do t=$(( t + $(awk '{print $14 + $15}' /proc/$p/stat) )); done; echo $t; }
cpu_before=$(cpu_ticks)

start=$(date +%s%N)
psql_ "INSERT INTO hagen.job (project_id, kind, lane, provider, step, state)
	SELECT '$project', 'cancel', 'http', 'fal', 'cancel',
		jsonb_build_object('request_id', 'r' || i, 'cancel_url', '$url/queue/fal-ai/kling-video/requests/r' || i || '/cancel')
	FROM generate_series(1, $n) i"
peak_inflight=0
while :; do
	line=$(psql_ "SELECT count(*) FILTER (WHERE status IN ('queued', 'running')) || ' ' || count(*) FILTER (WHERE status = 'running') FROM hagen.job")
	left=${line% *}; running=${line#* }
	[ "$running" -gt "$peak_inflight" ] && peak_inflight=$running
	[ "$left" = 0 ] && break
	sleep 0.2
done
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
hwm=$(awk '/VmHWM/ {print $2}' /proc/$dpid/status)
cpu_ms=$(( ($(cpu_ticks) - cpu_before) * 1000 / $(getconf CLK_TCK) ))
rss_after=$(awk "/RssAnon/ {print \$2}" /proc/$dpid/status)
failed=$(psql_ "SELECT count(*) FROM hagen.job WHERE status <> 'succeeded'")
logs=$(psql_ "SELECT count(*) FROM hagen.job_log")

# Reference 1: curl's own parallel mode, same requests, same concurrency.
cfg="$work/curl.cfg"
for i in $(seq 1 "$n"); do printf 'url = "%s/queue/fal-ai/kling-video/requests/r%s/cancel"\noutput = "/dev/null"\n' "$url" "$i"; done >"$cfg"
cstart=$(date +%s%N)
curl -s --no-progress-meter --parallel --parallel-max "$inflight" -X PUT -K "$cfg" 2>/dev/null
cms=$(( ($(date +%s%N) - cstart) / 1000000 ))
# Reference 2: a plain curl loop (one process per request), 1000 requests.
lstart=$(date +%s%N)
for i in $(seq 1 1000); do curl -s -o /dev/null -X PUT "$url/queue/fal-ai/kling-video/requests/r$i/cancel"; done
lms=$(( ($(date +%s%N) - lstart) / 1000000 ))

rate=$(( n * 1000 / (ms > 0 ? ms : 1) ))
crate=$(( n * 1000 / (cms > 0 ? cms : 1) ))
lrate=$(( 1000 * 1000 / (lms > 0 ? lms : 1) ))
cat <<REPORT
jobs: $n, hagen.max_inflight: $inflight, hagen.dispatchers: $dispatchers, failed: $failed, job_log rows: $logs, peak running seen: $peak_inflight
hagenkit dispatcher : $ms ms  -> $rate effects/s (claim + HTTP + outcome transaction each)
curl --parallel     : $cms ms -> $crate requests/s (no bookkeeping)
curl loop           : $lms ms for 1000 -> $lrate requests/s
dispatchers' CPU    : $cpu_ms ms user+system -> $(( cpu_ms * 1000 / n )) us per effect
dispatcher memory   : private (RssAnon) $rss_before kB before, $rss_after kB after; peak RSS incl. shared buffers touched (VmHWM) $hwm kB
ratio hagenkit / curl --parallel: $(awk "BEGIN {printf \"%.2f\", $rate / $crate}")
REPORT
