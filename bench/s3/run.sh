#!/usr/bin/env bash
# Upload throughput and peak memory for one large file (1 GiB by default):
# hagenkit's multipart upload (a clip job's storing steps, through the
# dispatcher) beside `aws s3 cp` (Debian's awscli) to the same local S3
# server in the same run.
#
#   bash bench/s3/run.sh [SIZE_MIB] [ROUNDS] [PART_SIZE] [CONCURRENCY]
#
# PART_SIZE and CONCURRENCY set hagen.s3_part_size and
# hagen.s3_upload_concurrency (default: the settings' defaults).
# Our wall-clock runs from queuing the job to seeing it succeed (one psql
# session polls every 20 ms); the job's own
# clock runs from the claim of its first step to the end of
# CompleteMultipartUpload.  The dispatcher's private memory (RssAnon) is
# sampled every 50 ms during the upload.  aws's figure is wall-clock
# (process start included) and its peak RSS from /usr/bin/time.  Rounds
# alternate the two; the ratio compares the best wall-clocks.  The server's
# request log splits each upload into its parts phase (first part received
# to last part answered) and its completion (the server concatenating the
# parts), for both clients.
# Run as root after make install.
set -euo pipefail
cd "$(dirname "$0")/../.."
size_mib=${1:-1024}
rounds=${2:-3}
part_size=${3:-}
concurrency=${4:-}
work=$(mktemp -d /tmp/hagenkit-s3bench.XXXXXX)
chown postgres "$work"
pids=()
cleanup() {
	su postgres -c "pg_ctl -D '$work/pgdata' -m fast stop" >/dev/null 2>&1 || true
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
export PATH="$(pg_config --bindir):$PATH"
aws=/usr/bin/aws
[ -x "$aws" ] || { echo "awscli is not installed (apt-get install awscli)"; exit 1; }

node --openssl-legacy-provider test/s3/s3server.js --access-key bench-key --secret bench-secret --bucket videos --dir "$work/s3" --request-log "$work/requests.log" \
	>"$work/s3.out" 2>"$work/s3.err" &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/s3.out" && break; sleep 0.1; done
s3=$(sed -nE 's/.*"listening":"([^"]+)".*/\1/p' "$work/s3.out")
[ -n "$s3" ] || { echo "the S3 server did not start (run bash test/deps.sh first):"; cat "$work/s3.err"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su postgres -c "initdb -D '$work/pgdata' -A trust -U postgres" >/dev/null
cat >>"$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit'
hagen.database = 'postgres'
hagen.compile_workers = 0
hagen.fal_key = 'bench:key'
hagen.s3_endpoint = '$s3'
hagen.s3_bucket = 'videos'
hagen.s3_access_key_id = 'bench-key'
hagen.s3_secret_access_key = 'bench-secret'
hagen.work_dir = '$work/hagen_work'
CONF
[ -n "$part_size" ] && echo "hagen.s3_part_size = '$part_size'" >>"$work/pgdata/postgresql.conf"
[ -n "$concurrency" ] && echo "hagen.s3_upload_concurrency = $concurrency" >>"$work/pgdata/postgresql.conf"
su postgres -c "pg_ctl -D '$work/pgdata' -l '$work/server.log' -w start" >/dev/null
psql_() { su postgres -c "psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 -c \"$1\""; }
psql_ "CREATE EXTENSION hagenkit"
settings=$(psql_ "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ' ') FROM pg_settings
	WHERE name IN ('hagen.s3_multipart_threshold', 'hagen.s3_part_size', 'hagen.s3_upload_concurrency')")
dpid=$(psql_ "SELECT pid FROM pg_stat_activity WHERE backend_type = 'hagenkit dispatcher'")

mkdir -p "$work/hagen_work"
head -c "${size_mib}M" /dev/urandom >"$work/source.bin"
bytes=$(stat -c %s "$work/source.bin")
sum=$(sha256sum "$work/source.bin" | cut -c1-64)
chown -R postgres "$work/hagen_work" "$work/source.bin"

export AWS_ACCESS_KEY_ID=bench-key AWS_SECRET_ACCESS_KEY=bench-secret AWS_CONFIG_FILE="$work/aws.config"
printf '[default]\nregion = auto\ns3 =\n  addressing_style = path\n' >"$AWS_CONFIG_FILE"

rss_before=$(awk '/RssAnon/ {print $2}' /proc/$dpid/status)
ours_ms=() ; ours_wall=() ; phases=() ; ours_server=() ; aws_server=()
# The parts phase and the completion of the last upload, from the server's log.
server_phases() {
	awk '$1 == "PUT" && $2 ~ /partNumber=/ { n++; b += 0; if (!s || $4 < s) s = $4; if ($5 > e) e = $5 }
		$1 == "POST" && $2 ~ /uploadId=/ { c = $5 - $4 }
		END { printf "%d parts in %d ms, completion %d ms", n, e - s, c }' "$work/requests.log"
} ; aws_ms=() ; rss_peak=0 ; aws_rss=()
for r in $(seq 1 "$rounds"); do
	# Ours: a clip job whose video is the file, at its storing step.
	ids=$(psql_ "SELECT p || ' ' || c FROM hagen.create_project('bench') p, LATERAL hagen.add_clip(p, 'https://img.example.com/a.jpg') c")
	p=${ids% *}; c=${ids#* }
	mkdir -p "$work/hagen_work/$p"
	ln "$work/source.bin" "$work/hagen_work/$p/$c.mp4"
	chown -R postgres "$work/hagen_work/$p"
	: >"$work/requests.log"
	start=$(date +%s%N)
	psql_ "SELECT hagen.start_video('$p') IS NOT NULL; UPDATE hagen.job SET step = hagen._store_step($bytes), run_at = now(),
		state = state || jsonb_build_object('bytes', $bytes) WHERE project_id = '$p'" >/dev/null
	# One session waits for the job (no process per poll to steal CPU from
	# the server); a sampler reads the dispatcher's memory meanwhile.
	( peak=0; while :; do
		while read -r k v _; do [ "$k" = RssAnon: ] && [ "$v" -gt "$peak" ] && peak=$v && echo "$peak" >"$work/rss.peak"; done </proc/$dpid/status
		sleep 0.05
	  done ) &
	sampler=$!
	cat >"$work/wait.sql" <<SQL
DO \$\$ BEGIN
	WHILE (SELECT status FROM hagen.job WHERE project_id = '$p' AND kind = 'clip') IN ('queued', 'running') LOOP
		PERFORM pg_sleep(0.02);
	END LOOP;
END \$\$;
SELECT status FROM hagen.job WHERE project_id = '$p' AND kind = 'clip';
SQL
	st=$(su postgres -c "psql -h '$work' -p $port -d postgres -X -q -At -v ON_ERROR_STOP=1 -f '$work/wait.sql'")
	ours_wall+=($(( ($(date +%s%N) - start) / 1000000 )))
	kill "$sampler"; wait "$sampler" 2>/dev/null || true
	[ "$(cat "$work/rss.peak")" -gt "$rss_peak" ] && rss_peak=$(cat "$work/rss.peak")
	[ "$st" = succeeded ] || { psql_ "SELECT last_error FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'"; exit 1; }
	ms=$(psql_ "SELECT round(extract(epoch FROM finished_at - started_at) * 1000) FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'")
	ours_ms+=("$ms")
	phases+=("$(psql_ "SELECT string_agg(format('%s %s ms', s, d), ', ' ORDER BY t) FROM (
			SELECT s, t, round(extract(epoch FROM t - lag(t) OVER (ORDER BY t)) * 1000) AS d FROM (
				SELECT substring(message FROM 'step (\\w+) done') AS s, logged_at AS t FROM hagen.job_log
				WHERE job_id = (SELECT id FROM hagen.job WHERE project_id = '$p' AND kind = 'clip')
				  AND message LIKE 'step %'
				UNION ALL SELECT NULL, started_at FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'
				UNION ALL SELECT 'upload_complete', finished_at FROM hagen.job WHERE project_id = '$p' AND kind = 'clip') x) y
		WHERE d IS NOT NULL")")
	ours_server+=("$(server_phases)")
	key=$(psql_ "SELECT state ->> 'key' FROM hagen.job WHERE project_id = '$p' AND kind = 'clip'")
	got=$(curl -s "$s3/videos/$key" | sha256sum | cut -c1-64)
	[ "$got" = "$sum" ] || { echo "round $r: our object differs from the file"; exit 1; }
	curl -s -X DELETE "$s3/videos/$key" >/dev/null

	# aws s3 cp, same file, same server.
	: >"$work/requests.log"
	start=$(date +%s%N)
	/usr/bin/time -f '%M' -o "$work/aws.time" $aws --endpoint-url "$s3" s3 cp --only-show-errors \
		"$work/source.bin" "s3://videos/aws/round$r.bin"
	aws_ms+=($(( ($(date +%s%N) - start) / 1000000 )))
	aws_rss+=("$(cat "$work/aws.time")")
	aws_server+=("$(server_phases)")
	got=$(curl -s "$s3/videos/aws/round$r.bin" | sha256sum | cut -c1-64)
	[ "$got" = "$sum" ] || { echo "round $r: aws's object differs from the file"; exit 1; }
	curl -s -X DELETE "$s3/videos/aws/round$r.bin" >/dev/null
	rm -f "$work/hagen_work/$p/$c.mp4"
done
hwm=$(awk '/VmHWM/ {print $2}' /proc/$dpid/status)
rss_after=$(awk '/RssAnon/ {print $2}' /proc/$dpid/status)

mibps() { awk -v b="$bytes" -v ms="$1" 'BEGIN {printf "%.0f", b / 1048576 / (ms / 1000)}'; }
best() { printf '%s\n' "$@" | sort -n | head -1; }
echo "file: $bytes bytes ($size_mib MiB), $rounds rounds, $settings"
printf 'hagenkit multipart : %s ms wall -> %s MiB/s (best of: %s); job clock %s ms (%s)\n' "$(best "${ours_wall[@]}")" \
	"$(mibps "$(best "${ours_wall[@]}")")" "${ours_wall[*]}" "$(best "${ours_ms[@]}")" "${ours_ms[*]}"
printf 'aws s3 cp          : %s ms -> %s MiB/s (best of: %s)\n' "$(best "${aws_ms[@]}")" "$(mibps "$(best "${aws_ms[@]}")")" "${aws_ms[*]}"
printf 'hagenkit phases    : %s\n' "${phases[@]}"
printf 'server, hagenkit   : %s\n' "${ours_server[@]}"
printf 'server, aws        : %s\n' "${aws_server[@]}"
echo "dispatcher memory  : private (RssAnon) $rss_before kB before, peak $rss_peak kB sampled during the uploads, $rss_after kB after; VmHWM (incl. shared memory touched) $hwm kB"
echo "aws s3 cp memory   : peak RSS ${aws_rss[*]} kB"
awk -v a="$(best "${ours_wall[@]}")" -v b="$(best "${aws_ms[@]}")" 'BEGIN {printf "throughput ratio hagenkit / aws: %.2f\n", b / a}'
