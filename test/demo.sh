#!/usr/bin/env bash
# The main job on embedded defaults: a throwaway cluster with hagenkit
# preloaded, the local Fal.ai simulator and a local S3 server, a sample
# property of five photos (rooms drawn here, kept in demo-output/photos/),
# hagen.start_video, a live progress bar driven by LISTEN hagen_video until
# the project ends, and a summary of the final video: URL, duration, streams,
# cost, a labelled contact sheet and a timeline of the run (PNG).
# With FAL_KEY and R2_* in the environment it uses the real services instead.
# The simulator runs at realistic pacing (Kling: a few seconds queued, a
# minute of generation) scaled by DEMO_TIME_SCALE (default 0.75: about a
# minute in all).  DEMO_CROSSFADE=0.5 fades the cuts between clips (0.1 to
# 2 s; the compile then re-encodes).  DEMO_NATIVE_AUDIO=false turns the
# clips' own sound (a quiet room tone from the simulator) off.
# DEMO_REMOTE_WORKERS=N runs the compile on N `hagen-compile worker` processes
# beside the server (as on other hosts: through presigned URLs, with
# hagen.compile_workers = 0).  Run as root on Debian 12.  Output goes to
# ./demo-output/; test/demo_check.py checks it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

crossfade=${DEMO_CROSSFADE:-0}
native_audio=${DEMO_NATIVE_AUDIO:-true}
[[ "$native_audio" =~ ^(true|false)$ ]] || { echo "DEMO_NATIVE_AUDIO must be true or false"; exit 1; }
[[ "$crossfade" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "DEMO_CROSSFADE must be a number of seconds (0, or 0.1 to 2)"; exit 1; }
remote_workers=${DEMO_REMOTE_WORKERS:-0}
[[ "$remote_workers" =~ ^[0-9]+$ ]] && [ "$remote_workers" -le 16 ] || { echo "DEMO_REMOTE_WORKERS must be a number of workers (0 to 16)"; exit 1; }
bash test/deps.sh
make -s && make -s install >/dev/null

out=${DEMO_OUTPUT:-"$root/demo-output"}
rm -rf "$out"
mkdir -p "$out"
work=$(mktemp -d /tmp/hagenkit-demo.XXXXXX)
chown postgres "$work"
pids=()
cleanup() {
	[ -f "$work/pgdata/postmaster.pid" ] && su postgres -c "pg_ctl -D '$work/pgdata' -m fast stop" >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
pgbin=$(pg_config --bindir)
export PATH="$pgbin:$PATH"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Starts a node server that prints {"listening": URL}; sets $url to it.
start_server() {
	local log=$1; shift
	node "$@" >"$log" 2>"$log.err" &
	pids+=($!)
	for _ in $(seq 1 100); do
		if grep -q listening "$log" 2>/dev/null; then
			url=$(sed -nE 's/.*"listening" *: *"([^"]+)".*/\1/p' "$log" | head -1)
			return 0
		fi
		sleep 0.1
	done
	echo "server $* did not start:" >&2
	cat "$log.err" >&2
	return 1
}

echo "== local services"
real_services=false
if [ -n "${FAL_KEY:-}" ] && [ -n "${R2_ACCOUNT_ID:-}" ] && [ -n "${R2_ACCESS_KEY_ID:-}" ]; then
	real_services=true
	echo "using the real Fal.ai and R2 from the environment"
fi
s3_key=demo-access-key
s3_secret=demo-secret-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
fal_key="demo-id:demo-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
if ! $real_services; then
	for f in test/sim/fal_sim.js test/s3/s3server.js; do
		[ -f "$f" ] || { echo "demo: $f is not there yet: the simulators land with the Fal.ai and storage issues" >&2; exit 1; }
	done
	start_server "$work/fal.log" test/sim/fal_sim.js --port 0 --key "$fal_key" --mode realistic \
		--time-scale "${DEMO_TIME_SCALE:-0.75}" --workdir "$work/fal"
	fal=$url
	start_server "$work/s3.log" --openssl-legacy-provider test/s3/s3server.js --port 0 \
		--access-key "$s3_key" --secret "$s3_secret" --bucket videos --dir "$work/s3"
	s3=$url
	echo "Fal.ai simulator: $fal"
	echo "S3 server:        $s3 (bucket videos)"
fi

echo "== sample property"
# Drawn rooms (test/demo_photos.py, Pillow), one camera move asked of each.
names=(exterior living_room kitchen primary_bedroom backyard)
labels=("Front of the house" "Living room" "Kitchen" "Primary bedroom" "Backyard")
moves=("Slow cinematic push-in toward the front door, soft daylight, steady gimbal shot"
	"Slow pan right across the living room, subtle parallax between the furniture, bright inviting light"
	"Slow glide to the left along the kitchen island, crisp clean light"
	"Gentle push-in toward the bed, soft morning light, serene mood"
	"Slow pull-back revealing the whole backyard and patio, calm afternoon light")
py=/usr/bin/python3
[ -x "$py" ] || py=python3
photo_args=()
for i in "${!names[@]}"; do photo_args+=("${names[$i]}:photo_$i"); done
"$py" test/demo_photos.py "$out/photos" "${photo_args[@]}"
echo "photos: $out/photos/ ($(ls "$out/photos" | wc -l) rooms, 1920x1080)"
ffmpeg -loglevel error -y -f lavfi -i "aevalsrc=0.2*sin(2*PI*220*t)+0.1*sin(2*PI*330*t):s=44100:d=40" -c:a libmp3lame -b:a 128k "$out/music.mp3" 2>/dev/null \
	|| ffmpeg -loglevel error -y -f lavfi -i "aevalsrc=0.2*sin(2*PI*220*t):s=44100:d=40" "$out/music.wav"
music_file=$(ls "$out"/music.* | head -1)
if ! $real_services; then
	# The local S3 server serves objects to anonymous GETs, like a public bucket.
	for i in "${!names[@]}"; do
		curl -sf -X PUT -H 'Content-Type: image/jpeg' --data-binary @"$out/photos/photo_$i.jpg" "$s3/videos/demo/photo_$i.jpg" >/dev/null
	done
	curl -sf -X PUT --data-binary @"$music_file" "$s3/videos/demo/$(basename "$music_file")" >/dev/null
	image_base="$s3/videos/demo"
else
	image_base="${DEMO_IMAGE_BASE:?set DEMO_IMAGE_BASE to a public URL holding photo_0..4.jpg}"
fi

echo "== throwaway cluster"
port=$(free_port)
su postgres -c "initdb -D '$work/pgdata' -A trust -U postgres" >/dev/null
cat >>"$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit'
hagen.database = 'postgres'
hagen.poll_interval = '200ms'
hagen.compile_workers = $([ "$remote_workers" -gt 0 ] && echo 0 || echo 1)
CONF
if ! $real_services; then
	cat >>"$work/pgdata/postgresql.conf" <<CONF
hagen.fal_key = '$fal_key'
hagen.fal_queue_url = '$fal/queue'
hagen.fal_rest_url = '$fal/rest'
hagen.s3_endpoint = '$s3'
hagen.s3_bucket = 'videos'
hagen.s3_access_key_id = '$s3_key'
hagen.s3_secret_access_key = '$s3_secret'
hagen.public_url = '$s3/videos'
CONF
fi
su postgres -c "pg_ctl -D '$work/pgdata' -l '$work/server.log' -w start" >/dev/null
psql_() { su postgres -c "psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 $*"; }
psql_ "-c 'CREATE EXTENSION hagenkit'"
# With remote workers they fit the photos and compile, through the bucket.
framing=crop
if [ "$remote_workers" -gt 0 ]; then
	# Compile workers as on other hosts: a role with hagen_worker, no secret.
	psql_ "-c 'CREATE ROLE demo_worker LOGIN IN ROLE hagen_worker'"
	for i in $(seq 1 "$remote_workers"); do
		"$pgbin/hagen-compile" worker --dsn "host=$work port=$port dbname=postgres user=demo_worker" \
			--name "demo-worker-$i" --work-dir "$work/workers" 2>"$out/worker-$i.log" &
		pids+=($!)
	done
	echo "$remote_workers remote compile worker(s): hagen.compile_workers = 0, logs in $out/worker-*.log"
fi

project=$(psql_ "-c \"
	SELECT p FROM hagen.add_music_track('Warm acoustic', '$image_base/$(basename "$music_file")', 'calm', 'warm') m,
		LATERAL hagen.create_project('demo-workspace', '16:9', 'fal', $native_audio, m, 0.3, 1.0, '{\\\"listing\\\": \\\"12 Demo Street\\\"}', $crossfade, framing => '$framing') p\"")
for i in "${!names[@]}"; do
	transition=cut
	[ "$i" = 1 ] && transition=seamless
	psql_ "-c \"SELECT hagen.add_clip('$project', '$image_base/photo_$i.jpg', room_type => '${names[$i]}', room_label => '${labels[$i]}', motion_prompt => '${moves[$i]}', transition_type => '$transition')\"" >/dev/null
done
echo "project $project: ${#names[@]} photos, one seamless transition, a music track"

echo "== hagen.start_video"
start=$(date +%s%N)
psql_ "-c \"SELECT jsonb_pretty(hagen.start_video('$project') - 'clips')\""
# The progress bar follows LISTEN hagen_video: every status and progress
# change of the project arrives as a notification.
su postgres -c "$py test/demo_watch.py --dsn 'host=$work port=$port dbname=postgres' --project $project --timeout ${DEMO_TIMEOUT:-900} --record '$work/provider_status.json'"
elapsed_ms=$(( ($(date +%s%N) - start) / 1000000 ))
elapsed="$((elapsed_ms / 1000)).$(printf '%03d' $((elapsed_ms % 1000)))"
status=$(psql_ "-c \"SELECT status FROM hagen.video_project WHERE id = '$project'\"")

echo "== result after ${elapsed}s"
psql_ "-c \"SELECT jsonb_pretty(hagen.video_status('$project'))\"" > "$out/status.json"
psql_ "-c \"SELECT to_char(logged_at, 'HH24:MI:SS.MS') || ' ' || level || ' ' || message FROM hagen.job_log WHERE project_id = '$project' ORDER BY id\"" > "$out/job_log.txt"
echo "project status: $out/status.json; job log: $out/job_log.txt ($(wc -l <"$out/job_log.txt") lines)"
stored=$(psql_ "-c \"SELECT count(*) FILTER (WHERE status = 'completed') || ' of ' || count(*) || ' clips, '
	|| count(*) FILTER (WHERE transition_status = 'completed') || ' transition(s)' FROM hagen.video_clip WHERE project_id = '$project'\"")
echo "generated and stored in the bucket: $stored"
if [ "$status" != completed ]; then
	psql_ "-c \"SELECT 'error: ' || coalesce(error_message, '(none)') FROM hagen.video_project WHERE id = '$project'\"" >&2
	echo "the project ended $status" >&2
	exit 1
fi

IFS='|' read -r final thumb duration cost <<<"$(psql_ "-c \"SELECT final_video_url, thumbnail_url, duration, actual_cost_cents FROM hagen.video_project WHERE id = '$project'\"")"
curl -sf -o "$out/final.mp4" "$final"
cp "$out/final.mp4" "$work/final.mp4" && chown postgres "$work/final.mp4"
curl -sf -o "$out/thumbnail.jpg" "$thumb"
compile_mode=$(psql_ "-c \"SELECT state -> 'result' ->> 'mode' FROM hagen.job WHERE project_id = '$project' AND kind = 'compile' ORDER BY id DESC LIMIT 1\"")
"$pgbin/hagen-compile" probe "$out/final.mp4" > "$out/final.probe.json"
streams=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
for s in d["streams"]:
    if s["type"] == "video":
        print("  video: %s %dx%d %g fps, %.3f s" % (s["codec"], s["width"], s["height"], s["fps"], s["duration"]))
    elif s["type"] == "audio":
        print("  audio: %s %d Hz, %d channels, %.3f s" % (s["codec"], s["sample_rate"], s["channels"], s["duration"]))
print("  index at the front: %s" % ("yes" if d["faststart"] else "no"))
' "$out/final.probe.json")
# The pictures: a contact sheet (a frame from the middle of every clip and
# transition, labelled with its room and its time in the video) and the run's
# timeline (one bar per job, cut into its steps), from the database.
su postgres -c "$py test/demo_pictures.py --dsn 'host=$work port=$port dbname=postgres' --project $project \
	--video '$work/final.mp4' --out '$work' --statuses '$work/provider_status.json'" <<<"" 2>&1 \
	|| { echo "demo: the pictures failed" >&2; exit 1; }
cp "$work/contact_sheet.png" "$work/timeline.png" "$work/pictures.json" "$out/"
# The clips as stored, for test/demo_check.py.
mkdir -p "$out/clips"
psql_ "-c \"SELECT sequence_order || ' ' || clip_url || ' ' || coalesce(transition_clip_url, '-') FROM hagen.video_clip WHERE project_id = '$project' ORDER BY sequence_order\"" |
while read -r n clip trans; do
	curl -sf -o "$out/clips/clip_$n.mp4" "$clip"
	[ "$trans" = - ] || curl -sf -o "$out/clips/transition_$n.mp4" "$trans"
done

echo "final video:   $final"
echo "duration:      ${duration} s (compiled in mode $compile_mode)"
if [ "$remote_workers" -gt 0 ]; then
	echo "compiled by:   $(psql_ "-c \"SELECT string_agg(DISTINCT substring(message FROM 'remote worker (\\S+)'), ', ') FROM hagen.job_log WHERE project_id = '$project' AND message LIKE 'claimed by remote worker %'\"") (remote, of $remote_workers)"
fi
echo "$streams"
printf 'cost:          $%d.%02d (%d cents)\n' $((cost / 100)) $((cost % 100)) "$cost"
echo "saved:         $out/final.mp4, $out/thumbnail.jpg, $out/photos/, $out/clips/"
echo "pictures:      $out/contact_sheet.png, $out/timeline.png"
