#!/usr/bin/env bash
# The in-server compile worker against one remote `hagen-compile worker`, on
# the same project: seconds from the last clip stored to final_video_url set.
# A project of N Kling-like 1080p clips (bench/lib/media.sh) with a 60 s music
# track, against the local S3 server, copy mode (the clips match):
#   inserver  a cluster with hagen.compile_workers = 1: the clips are in its
#             work directory (as right after the last one was stored), the
#             worker compiles there and the dispatcher stores thumbnail.jpg and
#             final.mp4 (multipart from hagen.s3_multipart_threshold);
#   remote    a cluster with hagen.compile_workers = 0 and one `hagen-compile
#             worker` beside it: the worker downloads every clip and the music
#             through presigned GET URLs, compiles in its own directory and
#             stores both outputs with presigned PUTs.
# The difference is the cost of the presigned transfers (and of the remote
# protocol).  Both clusters run the same installation, in alternation.
#
#   bash bench/remote/run.sh [N] [ROUNDS]          # default 20 clips, 3 rounds
#
# Prints one line per round (with where the time went) and the medians; raw
# rows in $BENCH_DIR/remote.tsv.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-20}
ROUNDS=${2:-3}
BENCH_DIR=${BENCH_DIR:-/var/tmp/hagenkit-bench}
CLIPS=${CLIPS:-$BENCH_DIR/clips}

bash test/deps.sh >/dev/null
source bench/lib/media.sh
kling_clips "$CLIPS" "$N"
make -s && make -s install >/dev/null
bin=$(pg_config --bindir)

work=$(mktemp -d /var/tmp/hagenkit-remote.XXXXXX)
chown postgres "$work"
pids=()
clusters=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for c in "${clusters[@]}"; do
		su postgres -c "$bin/pg_ctl -D '$c/data' -m immediate stop" >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

node --openssl-legacy-provider test/s3/s3server.js --port 0 --access-key bench-key --secret bench-secret \
	--bucket videos --dir "$work/s3" >"$work/s3.log" 2>"$work/s3.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/s3.log" 2>/dev/null && break; sleep 0.1; done
s3=$(sed -nE 's/.*"listening" *: *"([^"]+)".*/\1/p' "$work/s3.log")
[ -n "$s3" ] || { echo "bench: the S3 server did not start: $(cat "$work/s3.err")" >&2; exit 1; }
curl -sf -X PUT --data-binary @"$CLIPS/music.mp3" "$s3/videos/bench/music.mp3" >/dev/null

declare -A port wdir
for name in inserver remote; do
	c="$work/$name"
	mkdir -p "$c"
	chown postgres "$c"
	port[$name]=$(free_port)
	wdir[$name]="$c/work"
	su postgres -c "$bin/initdb -D '$c/data' -A trust -U postgres" >/dev/null
	cat >>"$c/data/postgresql.conf" <<CONF
port = ${port[$name]}
listen_addresses = ''
unix_socket_directories = '$c'
shared_preload_libraries = 'hagenkit'
hagen.database = 'postgres'
hagen.work_dir = '${wdir[$name]}'
hagen.compile_workers = $([ $name = inserver ] && echo 1 || echo 0)
hagen.fal_key = 'unused:key'
hagen.s3_endpoint = '$s3'
hagen.s3_bucket = 'videos'
hagen.s3_access_key_id = 'bench-key'
hagen.s3_secret_access_key = 'bench-secret'
hagen.public_url = '$s3/videos'
CONF
	su postgres -c "$bin/pg_ctl -D '$c/data' -l '$c/server.log' -w start" >/dev/null
	clusters+=("$c")
	su postgres -c "$bin/psql -h '$c' -p ${port[$name]} -d postgres -X -q -c 'CREATE EXTENSION hagenkit'"
done
psql_() { local n=$1; shift; su postgres -c "$bin/psql -h '$work/$n' -p ${port[$n]} -d postgres -X -q -At -v ON_ERROR_STOP=1 -c \"$*\""; }

# The remote worker: a role with hagen_worker, its own directory.
psql_ remote "CREATE ROLE bench_worker LOGIN IN ROLE hagen_worker"
"$bin/hagen-compile" worker --dsn "host=$work/remote port=${port[remote]} dbname=postgres user=bench_worker" \
	--name bench-remote --work-dir "$work/worker" 2>"$work/worker.log" &
pids+=($!)

tsv=$BENCH_DIR/remote.tsv
mkdir -p "$BENCH_DIR"
: >"$tsv"
cat "$CLIPS"/c*.mp4 >/dev/null
for r in $(seq 1 "$ROUNDS"); do
	for name in inserver remote; do
		ws="bench-$name-$r"
		p=$(psql_ "$name" "SELECT hagen.create_project('$ws', music_track_id => hagen.add_music_track('m', '$s3/videos/bench/music.mp3'))")
		mkdir -p "${wdir[$name]}/$p"
		for i in $(seq 1 "$N"); do
			f=$(printf '%s/c%02d.mp4' "$CLIPS" "$i")
			c=$(psql_ "$name" "SELECT hagen.add_clip('$p', 'https://example.com/$i.jpg', room_label => 'Room $i')")
			curl -sf -X PUT -H 'Content-Type: video/mp4' --data-binary @"$f" "$s3/videos/$ws/videos/$p/$c.mp4" >/dev/null
			cp "$f" "${wdir[$name]}/$p/$c.mp4"
		done
		chown -R postgres "${wdir[$name]}"
		t0=$(psql_ "$name" "UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$p';
			UPDATE hagen.video_project SET status = 'generating', started_at = now() WHERE id = '$p';
			SELECT extract(epoch FROM clock_timestamp()); SELECT hagen._advance_project('$p')")
		t0=${t0%%$'\n'*}
		for _ in $(seq 1 1200); do
			st=$(psql_ "$name" "SELECT status FROM hagen.video_project WHERE id = '$p'")
			[ "$st" = completed ] || [ "$st" = failed ] && break
			sleep 0.1
		done
		[ "$st" = completed ] || { echo "bench: $name round $r: $st: $(psql_ "$name" "SELECT error_message FROM hagen.video_project WHERE id = '$p'")" >&2; exit 1; }
		row=$(psql_ "$name" "SELECT round((extract(epoch FROM completed_at) - $t0)::numeric, 2), duration,
			(SELECT (state -> 'result' ->> 'mode') || ' ' || (state -> 'result' ->> 'size')
			 FROM hagen.job WHERE project_id = '$p' AND kind = 'compile' ORDER BY id DESC LIMIT 1)
			FROM hagen.video_project WHERE id = '$p'")
		IFS='|' read -r secs dur how <<<"$row"
		# Where the time went: each log line of the compile job, seconds after t0.
		steps=$(psql_ "$name" "SELECT string_agg(round((extract(epoch FROM l.logged_at) - $t0)::numeric, 2)
				|| ' ' || left(l.message, 110), '; ' ORDER BY l.id)
			FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id
			WHERE j.project_id = '$p' AND j.kind = 'compile'")
		echo "bench: $name round $r steps: $steps" >&2
		printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$r" "$secs" "$dur" "$how" >>"$tsv"
		printf 'bench: %-8s round %s: %6.2f s from the last clip stored to the final URL (%s s of video, %s bytes)\n' \
			"$name" "$r" "$secs" "$dur" "${how:-}" >&2
	done
done
echo "N=$N ROUNDS=$ROUNDS: median seconds from the last clip stored to final_video_url set"
python3 - "$tsv" <<'PY'
import statistics, sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r[0] for r in rows))
med = {n: statistics.median(float(r[2]) for r in rows if r[0] == n) for n in names}
for n in names:
    xs = sorted(float(r[2]) for r in rows if r[0] == n)
    print(f'{n:10s} median {med[n]:6.2f} s  (min {xs[0]:.2f}, max {xs[-1]:.2f}, {len(xs)} rounds)')
a, b = names
print(f'ratio {b}/{a}: {med[b] / med[a]:.2f}')
PY
