#!/usr/bin/env bash
# A re-encode split into chunks: the time from the last clip stored to
# final_video_url set for a crossfade project of N Kling-like 1080p clips
# (bench/lib/media.sh; 0.5 s crossfades, a 60 s music track at 0.3), with
# x264 and the decoders limited to one thread per helper
# (hagen.compile_threads = 1), side by side in one session:
#
#   split1  1 compile worker, the re-encode split into chunks
#   split2  2 compile workers (restart), the same
#   one1    1 compile worker, one run (hagen.compile_chunk_length = 0)
#   cli     the ffmpeg CLI's xfade + acrossfade chain of bench/compile/run.sh,
#           one thread for each decoder, the filters and x264
#
# The project is set up as bench/finalize/run.sh does (clips in the bucket and
# in the work directory, then hagen._advance_project); the time is
# completed_at minus that moment.  Every run records the CPU seconds the
# cluster and the S3 server used (ours: their processes and the helpers they
# waited for, from /proc) and what the rest of the machine used meanwhile
# (others: /proc/stat's busy time less ours): other agents share this
# machine.  Each output is checked with ffprobe: duration, frames, audio
# end; the chunked outputs' audio packets and frame times against one1's.
# Each chunk's and each join's own CPU seconds come from hagen-compile's
# result (cpu_seconds), for the cost per chunk.
#
#   bash bench/chunks/run.sh [N] [ROUNDS]        # default 20 clips, 2 rounds
#   CONFIGS="split1 split2" CHUNK=10s bash bench/chunks/run.sh 20 1
#
# Uses the PostgreSQL installation pg_config names (source
# /work/tools/pgsandbox.sh NAME first): builds and installs the tree into it.
# Raw rows in $BENCH_DIR/chunks.tsv, a summary on stdout.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
N=${1:-20}
ROUNDS=${2:-2}
CONFIGS=${CONFIGS:-"split1 split2 one1 cli"}
CHUNK=${CHUNK:-10s}
THREADS=${THREADS:-1}
BENCH_DIR=${BENCH_DIR:-/var/tmp/hagenkit-bench-chunks}
CLIPS=${CLIPS:-/var/tmp/hagenkit-bench/clips}

for tool in ffmpeg ffprobe node curl python3 /usr/bin/time; do
	command -v "$tool" >/dev/null || { echo "bench: $tool is missing (bash test/deps.sh)" >&2; exit 1; }
done
[ -d node_modules/@20minutes/s3rver ] || { echo "bench: the npm test servers are missing (bash test/deps.sh)" >&2; exit 1; }
source bench/lib/media.sh
kling_clips "$CLIPS" "$N"
make -s && make -s install >/dev/null
bindir=$(pg_config --bindir)

mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
chown postgres "$work"
s3pid=
cleanup() {
	su postgres -c "$bindir/pg_ctl -D '$work/data' -m immediate stop" >/dev/null 2>&1 || true
	[ -n "$s3pid" ] && kill "$s3pid" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

node --openssl-legacy-provider test/s3/s3server.js --port 0 --access-key bench-key --secret bench-secret \
	--bucket videos --dir "$work/s3" >"$work/s3.log" 2>"$work/s3.err" &
s3pid=$!
for _ in $(seq 1 100); do grep -q listening "$work/s3.log" 2>/dev/null && break; sleep 0.1; done
s3=$(sed -nE 's/.*"listening" *: *"([^"]+)".*/\1/p' "$work/s3.log")
[ -n "$s3" ] || { echo "bench: the S3 server did not start: $(cat "$work/s3.err")" >&2; exit 1; }
curl -sf -X PUT --data-binary @"$CLIPS/music.mp3" "$s3/videos/bench/music.mp3" >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su postgres -c "$bindir/initdb -D '$work/data' -A trust -U postgres" >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit'
hagen.database = 'postgres'
hagen.work_dir = '$work/hagen_work'
hagen.compile_workers = 1
hagen.compile_threads = $THREADS
hagen.compile_chunk_length = '$CHUNK'
hagen.fal_key = 'unused:key'
hagen.s3_endpoint = '$s3'
hagen.s3_bucket = 'videos'
hagen.s3_access_key_id = 'bench-key'
hagen.s3_secret_access_key = 'bench-secret'
hagen.public_url = '$s3/videos'
CONF
pgctl() { su postgres -c "$bindir/pg_ctl -D '$work/data' -l '$work/server.log' -w $*" >/dev/null; }
pgctl start
psql_() { su postgres -c "$bindir/psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 -c \"$*\""; }
psql_ "CREATE EXTENSION hagenkit"
music=$(psql_ "SELECT hagen.add_music_track('m', '$s3/videos/bench/music.mp3')")

# Busy CPU seconds of the whole machine (all cores, /proc/stat).
busy() { awk -v hz="$(getconf CLK_TCK)" '/^cpu / { printf "%.2f\n", ($2 + $3 + $4 + $7 + $8 + $9) / hz }' /proc/stat; }
# CPU seconds of the cluster (the postmaster and all its descendants, with the
# children they waited for) and of the S3 server.
ours() {
	local pm
	pm=$(head -1 "$work/data/postmaster.pid")
	python3 - "$pm" "$s3pid" <<'PY'
import os, sys
hz = os.sysconf('SC_CLK_TCK')
kids = {}
for p in os.listdir('/proc'):
    if p.isdigit():
        try:
            f = open('/proc/%s/stat' % p).read().rsplit(')', 1)[1].split()
        except OSError:
            continue
        kids.setdefault(f[1], []).append((p, f))
def total(pid):
    try:
        f = open('/proc/%s/stat' % pid).read().rsplit(')', 1)[1].split()
    except OSError:
        return 0
    t = sum(int(x) for x in f[11:15])
    return t + sum(total(c) for c, _ in kids.get(pid, []))
print('%.2f' % ((total(sys.argv[1]) + total(sys.argv[2])) / hz))
PY
}

workers=1
set_workers() {
	if [ "$1" != "$workers" ]; then
		psql_ "ALTER SYSTEM SET hagen.compile_workers = $1"
		pgctl restart
		workers=$1
	fi
}

tsv=$BENCH_DIR/chunks.tsv
: >"$tsv"
# check FILE: v_duration v_frames a_duration audio_md5 times_md5
check() {
	python3 - "$1" <<'PY'
import hashlib, json, subprocess, sys
f = sys.argv[1]
def probe(sel, entries):
    return subprocess.run(['ffprobe', '-v', 'error', '-select_streams', sel, '-show_entries', entries,
                           '-of', 'csv=p=0', f], capture_output=True, text=True).stdout.split()
v = subprocess.run(['ffprobe', '-v', 'error', '-count_packets', '-select_streams', 'v:0', '-show_entries',
                    'stream=duration,nb_read_packets', '-of', 'json', f], capture_output=True, text=True).stdout
v = json.loads(v)['streams'][0]
a = probe('a:0', 'stream=duration')
times = sorted(float(x) for x in probe('v:0', 'packet=pts_time'))
apk = subprocess.run(['ffmpeg', '-nostdin', '-v', 'error', '-i', f, '-map', '0:a:0', '-c', 'copy', '-f', 'framemd5', '-'],
                     capture_output=True, text=True).stdout
apk = [l.split(',')[-2:] for l in apk.splitlines() if l and not l.startswith('#')]
print(v['duration'], v['nb_read_packets'], a[0] if a else '-',
      hashlib.md5(json.dumps(apk).encode()).hexdigest()[:12],
      hashlib.md5(json.dumps(['%.6f' % t for t in times]).encode()).hexdigest()[:12])
PY
}

cat "$CLIPS"/c*.mp4 >/dev/null
for r in $(seq 1 "$ROUNDS"); do
	for cfg in $CONFIGS; do
		if [ "$cfg" = cli ]; then
			# The spec's section 6 chain (bench/compile/run.sh), one thread each.
			inputs=() fc="" vprev="0:v" aprev="0:a"
			for i in $(seq 1 "$N"); do inputs+=(-threads 1 -i "$(printf '%s/c%02d.mp4' "$CLIPS" "$i")"); done
			inputs+=(-threads 1 -i "$CLIPS/music.mp3")
			for i in $(seq 1 $((N - 1))); do
				off=$(awk -v i="$i" 'BEGIN { printf "%.3f", i * 4.5 }')
				fc+="[$vprev][$i:v]xfade=transition=fade:duration=0.5:offset=$off[xv$i];[$aprev][$i:a]acrossfade=d=0.5[xa$i];"
				vprev=xv$i aprev=xa$i
			done
			fc+="[$N:a]volume=0.3[mus];[$aprev][mus]amix=inputs=2:duration=first:normalize=0[aout]"
			out=$work/cli.mp4
			b0=$(busy)
			/usr/bin/time -f '%e %U %S %M' -o "$work/time.txt" ffmpeg -nostdin -v error -y "${inputs[@]}" \
				-filter_complex_threads 1 -filter_complex "$fc" -map "[$vprev]" -map "[aout]" \
				-c:v libx264 -preset fast -crf 23 -threads 1 -pix_fmt yuv420p -c:a aac -b:a 192k "$out"
			b1=$(busy)
			read -r secs u s rss <"$work/time.txt"
			cpu=$(awk -v u="$u" -v s="$s" 'BEGIN { printf "%.2f", u + s }')
			others=$(awk -v a="$b0" -v b="$b1" -v c="$cpu" 'BEGIN { o = b - a - c; printf "%.2f", o < 0 ? 0 : o }')
			read -r vd vf ad amd5 tmd5 <<<"$(check "$out")"
			printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$r" "$secs" "$cpu" "$others" \
				"$vd" "$vf" "$ad" "$amd5" "$tmd5" "-" "-" "rss ${rss}KB" >>"$tsv"
			printf 'bench: round %s %-7s %7.2f s  ours %7.2f CPU s  others %7.2f CPU s  video %s s %s frames, audio %s s, RSS %s MB\n' \
				"$r" "$cfg" "$secs" "$cpu" "$others" "$vd" "$vf" "$ad" $((rss / 1024)) >&2
			rm -f "$out"
			continue
		fi
		case $cfg in
			split1) set_workers 1; chunk=$CHUNK ;;
			split2) set_workers 2; chunk=$CHUNK ;;
			one1) set_workers 1; chunk=0 ;;
			*) echo "bench: unknown config $cfg" >&2; exit 1 ;;
		esac
		psql_ "ALTER SYSTEM SET hagen.compile_chunk_length = '$chunk'"
		psql_ "SELECT pg_reload_conf()" >/dev/null
		sleep 0.5
		ws="bench-$cfg-$r"
		p=$(psql_ "SELECT hagen.create_project('$ws', music_track_id => '$music', crossfade => 0.5)")
		mkdir -p "$work/hagen_work/$p"
		for i in $(seq 1 "$N"); do
			f=$(printf '%s/c%02d.mp4' "$CLIPS" "$i")
			c=$(psql_ "SELECT hagen.add_clip('$p', 'https://example.com/$i.jpg', room_label => 'Room $i')")
			curl -sf -X PUT -H 'Content-Type: video/mp4' --data-binary @"$f" "$s3/videos/$ws/videos/$p/$c.mp4" >/dev/null
			cp "$f" "$work/hagen_work/$p/$c.mp4"
		done
		chown -R postgres "$work/hagen_work"
		c0=$(ours)
		b0=$(busy)
		t0=$(psql_ "UPDATE hagen.video_clip SET status = 'completed' WHERE project_id = '$p';
			UPDATE hagen.video_project SET status = 'generating', started_at = now() WHERE id = '$p';
			SELECT extract(epoch FROM clock_timestamp()); SELECT hagen._advance_project('$p')")
		t0=${t0%%$'\n'*}
		for _ in $(seq 1 36000); do
			st=$(psql_ "SELECT status FROM hagen.video_project WHERE id = '$p'")
			[ "$st" = completed ] || [ "$st" = failed ] && break
			sleep 0.2
		done
		c1=$(ours)
		b1=$(busy)
		[ "$st" = completed ] || { echo "bench: $cfg round $r: $st: $(psql_ "SELECT error_message FROM hagen.video_project WHERE id = '$p'")" >&2; exit 1; }
		secs=$(psql_ "SELECT round((extract(epoch FROM completed_at) - $t0)::numeric, 2) FROM hagen.video_project WHERE id = '$p'")
		cpu=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
		others=$(awk -v a="$b0" -v b="$b1" -v c="$cpu" 'BEGIN { o = b - a - c; printf "%.2f", o < 0 ? 0 : o }')
		out=$work/$cfg.mp4
		curl -sf "$(psql_ "SELECT final_video_url FROM hagen.video_project WHERE id = '$p'")" -o "$out"
		read -r vd vf ad amd5 tmd5 <<<"$(check "$out")"
		rm -f "$out"
		# Where the time and the CPU went: the helper's own CPU seconds per
		# chunk, and for the plan, the join or the one run.
		chunks=$(psql_ "SELECT coalesce(string_agg(round((state -> 'result' ->> 'cpu_seconds')::numeric, 2)::text
				|| '/' || round((state -> 'result' ->> 'duration')::numeric, 1), ' ' ORDER BY (state ->> 'number')::integer), '-')
			FROM hagen.job WHERE project_id = '$p' AND kind = 'chunk'")
		steps=$(psql_ "SELECT string_agg(round((extract(epoch FROM l.logged_at) - $t0)::numeric, 1) || ' '
				|| left(l.message, 34), '; ' ORDER BY l.id)
			FROM hagen.job_log l JOIN hagen.job j ON j.id = l.job_id WHERE j.project_id = '$p' AND j.kind = 'compile'")
		final_cpu=$(psql_ "SELECT round((state -> 'result' ->> 'cpu_seconds')::numeric, 2) FROM hagen.job
			WHERE project_id = '$p' AND kind = 'compile'")
		printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$cfg" "$r" "$secs" "$cpu" "$others" \
			"$vd" "$vf" "$ad" "$amd5" "$tmd5" "$chunks" "$final_cpu" "$steps" >>"$tsv"
		printf 'bench: round %s %-7s %7.2f s  ours %7.2f CPU s  others %7.2f CPU s  video %s s %s frames, audio %s s\n' \
			"$r" "$cfg" "$secs" "$cpu" "$others" "$vd" "$vf" "$ad" >&2
		echo "bench:   chunks (CPU s/video s): $chunks; join or one run $final_cpu CPU s" >&2
		echo "bench:   steps: $steps" >&2
	done
done

echo "N=$N ROUNDS=$ROUNDS CHUNK=$CHUNK THREADS=$THREADS: seconds from the last clip stored to final_video_url (median)"
python3 - "$tsv" <<'PY'
import statistics, sys
rows = [l.rstrip('\n').split('\t') for l in open(sys.argv[1]) if l.strip()]
names = list(dict.fromkeys(r[0] for r in rows))
med = {}
for n in names:
    rs = [r for r in rows if r[0] == n]
    xs = sorted(float(r[2]) for r in rs)
    med[n] = statistics.median(xs)
    print('%-7s median %7.2f s (min %.2f, max %.2f, %d rounds); ours %s CPU s; others %s CPU s; '
          'video %s s, %s frames, audio %s s; audio %s, frame times %s'
          % (n, med[n], xs[0], xs[-1], len(xs), '/'.join(r[3] for r in rs), '/'.join(r[4] for r in rs),
             rs[0][5], rs[0][6], rs[0][7], rs[0][8], rs[0][9]))
    for r in rs:
        if r[10] not in ('-', ''):
            costs = [float(c.split('/')[0]) for c in r[10].split()]
            print('        round %s: %d chunks, CPU s each %s (mean %.2f); join %s CPU s'
                  % (r[1], len(costs), ' '.join('%.1f' % c for c in costs), sum(costs) / len(costs), r[11]))
        elif r[11] not in ('-', ''):
            print('        round %s: one run %s CPU s' % (r[1], r[11]))
for a, b in (('split1', 'split2'), ('one1', 'split2'), ('cli', 'split2'), ('one1', 'split1'), ('cli', 'one1')):
    if a in med and b in med:
        print('speed-up %s / %s: %.2fx' % (a, b, med[a] / med[b]))
base = {r[0]: r for r in rows}
if 'one1' in base:
    for n in ('split1', 'split2'):
        if n in base:
            same = all(r[8] == base['one1'][8] and r[9] == base['one1'][9] and r[6] == base['one1'][6]
                       for r in rows if r[0] == n)
            print('%s output: frames, frame times and audio packets %s one1\'s' % (n, 'identical to' if same else 'DIFFER from'))
PY
