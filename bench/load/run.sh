#!/usr/bin/env bash
# Load: many projects started together, the whole pipeline (Fal.ai storage,
# submit, poll, result, download, store in S3, compile, final upload).
# Reports wall time, jobs and effects per second, polls per clip, the HTTP
# requests in flight against hagen.max_inflight, the latency of a trivial
# query during the run, the engine's SQL per effect, worker memory and CPU,
# and the CPU the rest of the machine used meanwhile.
#
#   bash bench/load/run.sh [PROJECTS] [CLIPS] [MAX_INFLIGHT] [DISPATCHERS]   (default 50 20 64 1)
#
# Environment:
#   PROVIDER=sim       the Fal.ai simulator and the S3 server (test/sim, test/s3), instant:
#                      no queue, no processing time (default)
#   PROVIDER=instant   bench/load/instant_provider.js: Fal.ai and S3 answering at once with
#                      tiny bodies, for what the engine itself sustains (POLLS=N status polls
#                      per request, default 2)
#   GENERATION_S=90    the simulator paced like the real service: 3 s in the queue, then
#                      GENERATION_S seconds generating, at TIME_SCALE (default 0.05: 90 s
#                      take 4.5 s), with hagen.poll_interval = 2 s x TIME_SCALE; so polls per
#                      clip are what they would be against Fal.ai at 2 s
#   POLL_INTERVAL      hagen.poll_interval (default 100ms, or 2 s x TIME_SCALE when paced)
#   MAX_CONCURRENT=N   the simulated account runs N requests at once, the rest wait in its queue
#   WAVES=N            the projects start in N waves, each when the one before has ended (a
#                      model's typical generation time is learnt from the jobs of earlier waves)
#   TRACK_FUNCTIONS=all  adds the busiest SQL functions (the instrumentation slows every call)
#   WORK_TMPFS=1       hagen.work_dir on tmpfs (/dev/shm): on an ext4 without a journal (these
#                      machines' root) creating a file scans past every inode freed in the last
#                      minute (find_inode_bit -> recently_deleted), a third of the dispatcher's
#                      CPU under load; the tmpfs measures the engine rather than that
#
# Run as root after make install.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
projects=${1:-50}
clips=${2:-20}
inflight=${3:-64}
dispatchers=${4:-1}
provider=${PROVIDER:-sim}
work=$(mktemp -d /tmp/hagenkit-load.XXXXXX)
chown postgres "$work"
work_dir=$work/hagen_work
if [ -n "${WORK_TMPFS:-}" ]; then
	work_dir=$(mktemp -d /dev/shm/hagenkit-load-work.XXXXXX)
	chown postgres "$work_dir"
fi
pids=()
cleanup() {
	su postgres -c "pg_ctl -D '$work/pgdata' -m fast stop" >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
	if [ -n "${WORK_TMPFS:-}" ]; then rm -rf "$work_dir"; fi
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

poll_interval=${POLL_INTERVAL:-100ms}
if [ "$provider" = instant ]; then
	ffmpeg -loglevel error -y -f lavfi -i "testsrc=s=160x90:r=24:d=1" -f lavfi -i "sine=d=1" \
		-c:v libx264 -pix_fmt yuv420p -c:a aac -shortest "$work/clip.mp4"
	start_server "$work/instant.log" bench/load/instant_provider.js --video "$work/clip.mp4" --polls "${POLLS:-2}"
	fal=$url
	s3=$url
	photos=$url/photos
else
	scale=${TIME_SCALE:-0.05}
	if [ -n "${GENERATION_S:-}" ]; then
		start_server "$work/fal.log" test/sim/fal_sim.js --key load:key --workdir "$work/fal" --video-size small --mode realistic --time-scale "$scale"
		fal=$url
		curl -sf -X POST -H 'content-type: application/json' \
			-d "{\"queue_s\":3,\"processing_s\":$GENERATION_S,\"max_concurrent\":${MAX_CONCURRENT:-0}}" "$fal/_sim/config" >/dev/null
		poll_interval=${POLL_INTERVAL:-$(awk -v s="$scale" 'BEGIN { printf "%dms", 2000 * s }')}
	else
		start_server "$work/fal.log" test/sim/fal_sim.js --key load:key --workdir "$work/fal" --video-size small
		fal=$url
		# Instant provider: no queue, no processing time.
		curl -sf -X POST -H 'content-type: application/json' -d "{\"queue_s\":0,\"processing_s\":0,\"max_concurrent\":${MAX_CONCURRENT:-0}}" "$fal/_sim/config" >/dev/null
	fi
	start_server "$work/s3.log" --openssl-legacy-provider test/s3/s3server.js --access-key lk --secret ls --bucket videos --dir "$work/s3"
	s3=$url
	photos=$s3/videos/photos
	for i in $(seq 0 $((clips - 1))); do
		ffmpeg -loglevel error -y -f lavfi -i "color=c=0x$(printf '%02x%02x%02x' $((i * 11 % 256)) $((200 - i * 7)) 90):s=640x360" -frames:v 1 "$work/p$i.jpg"
		curl -sf -X PUT -H 'Content-Type: image/jpeg' --data-binary @"$work/p$i.jpg" "$s3/videos/photos/$i.jpg" >/dev/null
	done
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su postgres -c "initdb -D '$work/pgdata' -A trust -U postgres" >/dev/null
# hagen.dispatchers is new in 0.4: an older build only warns about it.
cat >>"$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit,pg_stat_statements'
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
hagen.dispatchers = $dispatchers
hagen.poll_interval = '$poll_interval'
hagen.compile_workers = 2
hagen.work_dir = '$work_dir'
shared_buffers = '256MB'
# Projects of up to 1000 clips (0.4 limits them to 20 by default; older builds ignore this).
hagen.max_clips_per_project = 1000
track_functions = '${TRACK_FUNCTIONS:-none}'
CONF
su postgres -c "pg_ctl -D '$work/pgdata' -l '$work/server.log' -w start" >/dev/null
psql_() { su postgres -c "psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 -c \"$1\""; }
psql_ "CREATE EXTENSION hagenkit"
psql_ "CREATE EXTENSION pg_stat_statements"
# Projects of $clips clips, a seamless transition after every fifth.
psql_ "SELECT count(hagen.add_clip(p, '$photos/' || i || '.jpg',
		room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom', 'bathroom'])[i % 5 + 1],
		transition_type => CASE WHEN i % 5 = 4 AND i < $clips - 1 THEN 'seamless' ELSE 'cut' END))
	FROM (SELECT hagen.create_project('load-' || n) p FROM generate_series(1, $projects) n) ps,
		generate_series(0, $clips - 1) i" >/dev/null
# Photos go as they are: fitting them to the aspect ratio (hagen.video_project.framing,
# from 0.4 on) runs hagen-compile on the compile workers for every photo, which would set
# the pace here and is not what this measures.  (Older builds have no such column.)
psql_ "UPDATE hagen.video_project SET framing = 'none'" 2>/dev/null || true
psql_ "SELECT pg_stat_statements_reset()" >/dev/null
echo "load: $projects projects x $clips clips, hagen.max_inflight = $inflight, $dispatchers dispatcher(s), provider $provider${GENERATION_S:+ paced ${GENERATION_S} s}, poll interval $poll_interval" >&2
su postgres -c "python3 bench/load/drive.py 'host=$work port=$port dbname=postgres' '$work/pgdata' ${pids[*]}"
if [ "$provider" = instant ]; then echo "provider saw: $(curl -s "$fal/_stats")" >&2; fi
