#!/usr/bin/env bash
# The engine's SQL per effect, with no network: PROJECTS projects of CLIPS
# clips (a seamless transition after every fifth) are started together and
# driven to completion by bench/engine/drive.py, which claims and completes
# jobs as the dispatcher and the compile workers do and answers every effect
# at once itself (an instant Fal.ai and S3).  Prints the time in
# claim_jobs + next_due + complete_jobs per effect, and the CPU the rest of
# the machine used meanwhile.
#
#   bash bench/engine/run.sh [PROJECTS] [CLIPS] [POLLS]      (default 50 20 3)
#   TRACK_FUNCTIONS=all bash bench/engine/run.sh ...   adds the busiest functions
#   (the instrumentation itself slows every call down)
#   PGSS=1 bash bench/engine/run.sh ...   adds the busiest statements, nested ones included
#   PERF=/tmp/engine.perf bash bench/engine/run.sh ...  records the driver's backend
#
# Run as root after make install.
set -euo pipefail
cd "$(dirname "$0")/../.."
projects=${1:-50}
clips=${2:-20}
polls=${3:-3}
work=$(mktemp -d /tmp/hagenkit-engine.XXXXXX)
chown postgres "$work"
cleanup() {
	su postgres -c "pg_ctl -D '$work/pgdata' -m fast stop" >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
export PATH="$(pg_config --bindir):$PATH"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
su postgres -c "initdb -D '$work/pgdata' -A trust -U postgres" >/dev/null
# The workers serve the database "postgres", where the extension is not
# installed: they stay idle and the driver is the only worker.
cat >>"$work/pgdata/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$work'
shared_preload_libraries = 'hagenkit${PGSS:+,pg_stat_statements}'
${PGSS:+pg_stat_statements.track = 'all'}
hagen.database = 'postgres'
hagen.fal_key = 'bench:key'
hagen.fal_queue_url = 'http://fal.test/queue'
hagen.fal_rest_url = 'http://fal.test/rest'
hagen.s3_endpoint = 'http://s3.test:9000'
hagen.s3_bucket = 'videos'
hagen.s3_access_key_id = 'k'
hagen.s3_secret_access_key = 's'
hagen.public_url = 'http://s3.test:9000/videos'
hagen.poll_interval = '1ms'
shared_buffers = '256MB'
# Projects of up to 1000 clips (0.4 limits them to 20 by default; older builds ignore this).
hagen.max_clips_per_project = 1000
track_functions = '${TRACK_FUNCTIONS:-none}'
CONF
su postgres -c "pg_ctl -D '$work/pgdata' -l '$work/server.log' -w start" >/dev/null
su postgres -c "createdb -h '$work' -p $port bench"
psql_() { su postgres -c "psql -h '$work' -p $port -d bench -X -q -At -v ON_ERROR_STOP=1 -c \"$1\""; }
psql_ "CREATE EXTENSION hagenkit"
[ -n "${PGSS:-}" ] && psql_ "CREATE EXTENSION pg_stat_statements"
psql_ "SELECT count(hagen.add_clip(p, 'http://img.test/photos/' || i || '.jpg',
		room_type => (ARRAY['exterior', 'living_room', 'kitchen', 'bedroom', 'bathroom'])[i % 5 + 1],
		transition_type => CASE WHEN i % 5 = 4 AND i < $clips - 1 THEN 'seamless' ELSE 'cut' END))
	FROM (SELECT hagen.create_project('engine-' || n) p FROM generate_series(1, $projects) n) ps,
		generate_series(0, $clips - 1) i" >/dev/null
# Photos go as they are: fitting them to the aspect ratio (hagen.video_project.framing,
# from 0.4 on) runs hagen-compile on the compile workers for every photo, which would set
# the pace here and is not what this measures.  (Older builds have no such column.)
psql_ "UPDATE hagen.video_project SET framing = 'none'" 2>/dev/null || true
psql_ "VACUUM ANALYZE"
echo "engine: $projects projects x $clips clips, $polls polls IN_PROGRESS per generation" >&2
if [ -n "${PERF:-}" ]; then
	# PERF=FILE: perf record -g of the driver's backend into FILE.
	su postgres -c "python3 bench/engine/drive.py 'host=$work port=$port dbname=bench' --polls $polls --pgdata '$work/pgdata' --pidfile '$work/backend.pid'" &
	drv=$!
	for _ in $(seq 1 50); do [ -s "$work/backend.pid" ] && break; sleep 0.1; done
	perf record -g -o "$PERF" -p "$(cat "$work/backend.pid")" 2>/dev/null &
	prf=$!
	wait $drv
	kill -INT $prf; wait $prf || true
else
	su postgres -c "python3 bench/engine/drive.py 'host=$work port=$port dbname=bench' --polls $polls --pgdata '$work/pgdata'"
fi
