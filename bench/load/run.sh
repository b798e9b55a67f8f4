#!/usr/bin/env bash
# Load: many projects started together against instant simulators, the
# whole pipeline (Fal.ai storage, submit, poll, result, download, store in
# S3, compile, final upload).  Reports wall time, jobs and effects per
# second, the HTTP requests in flight against hagen.max_inflight, the
# latency of a trivial query during the run, worker memory over the run,
# and the dispatcher's CPU per effect (all SQL bookkeeping runs in it).
#
#   bash bench/load/run.sh [PROJECTS] [CLIPS] [MAX_INFLIGHT]     (default 50 20 64)
#
# Run as root after make install.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
projects=${1:-50}
clips=${2:-20}
inflight=${3:-64}
work=$(mktemp -d /tmp/hagenkit-load.XXXXXX)
chown postgres "$work"
pids=()
cleanup() {
	su postgres -c "pg_ctl -D '$work/pgdata' -m fast stop" >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
export PATH="$(pg_config --bindir):$PATH"

start_server() {
	local log=$1; shift
	node "$@" >"$log" 2>"$log.err" &
	pids+=($!)
	for _ in $(seq 1 100); do grep -q listening "$log" 2>/dev/null && break; sleep 0.1; done
	url=$(sed -nE 's/.*"listening" *: *"([^"]+)".*/\1/p' "$log" | head -1)
}
start_server "$work/fal.log" test/sim/fal_sim.js --key load:key --workdir "$work/fal" --video-size small
fal=$url
start_server "$work/s3.log" --openssl-legacy-provider test/s3/s3server.js --access-key lk --secret ls --bucket videos --dir "$work/s3"
s3=$url
# Instant provider: no queue, no processing time.
curl -sf -X POST -H 'content-type: application/json' -d '{"queue_s":0,"processing_s":0}' "$fal/_sim/config" >/dev/null

for i in $(seq 0 $((clips - 1))); do
	ffmpeg -loglevel error -y -f lavfi -i "color=c=0x$(printf '%02x%02x%02x' $((i * 11 % 256)) $((200 - i * 7)) 90):s=640x360" -frames:v 1 "$work/p$i.jpg"
	curl -sf -X PUT -H 'Content-Type: image/jpeg' --data-binary @"$work/p$i.jpg" "$s3/videos/photos/$i.jpg" >/dev/null
done

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su postgres -c "initdb -D '$work/pgdata' -A trust -U postgres" >/dev/null
cat >>"$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit'
hagen.database = 'postgres'
hagen.fal_key = 'load:key'
hagen.fal_queue_url = '$fal/queue'
hagen.fal_rest_url = '$fal/rest'
hagen.s3_endpoint = '$s3'
hagen.s3_bucket = 'videos'
hagen.s3_access_key_id = 'lk'
hagen.s3_secret_access_key = 'ls'
hagen.public_url = '$s3/videos'
hagen.max_inflight = $inflight
hagen.poll_interval = '100ms'
hagen.compile_workers = 2
shared_buffers = '256MB'
track_functions = 'all'
CONF
su postgres -c "pg_ctl -D '$work/pgdata' -l '$work/server.log' -w start" >/dev/null
psql_() { su postgres -c "psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 -c \"$1\""; }
psql_ "CREATE EXTENSION hagenkit"
# Projects of $clips clips, a seamless transition after every fifth.
psql_ "SELECT count(hagen.add_clip(p, '$s3/videos/photos/' || i || '.jpg',
		room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom', 'bathroom'])[i % 5 + 1],
		transition_type => CASE WHEN i % 5 = 4 AND i < $clips - 1 THEN 'seamless' ELSE 'cut' END))
	FROM (SELECT hagen.create_project('load-' || n) p FROM generate_series(1, $projects) n) ps,
		generate_series(0, $clips - 1) i" >/dev/null
echo "load: $projects projects x $clips clips, hagen.max_inflight = $inflight" >&2
su postgres -c "python3 bench/load/drive.py 'host=$work port=$port dbname=postgres'"
