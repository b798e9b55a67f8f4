#!/usr/bin/env bash
# The demo as a test (run by test/run.sh; TAP on stdout): test/demo.sh at a
# fiftieth of its pacing (about a minute in all on 2 cores) into a temporary
# directory, then test/demo_check.py on what it left: the photos, the two
# pictures, and a frame of every clip against its photo.  Run as root.
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/hagenkit-demo-check.XXXXXX)
trap 'rm -rf "$out" "$out.log"' EXIT
py=/usr/bin/python3
[ -x "$py" ] || py=python3
start=$(date +%s)
if DEMO_OUTPUT="$out" DEMO_TIME_SCALE=${DEMO_TIME_SCALE:-0.02} bash test/demo.sh >"$out.log" 2>&1; then
	echo "ok 1 - test/demo.sh runs to a completed video ($(( $(date +%s) - start )) s)"
else
	echo "not ok 1 - test/demo.sh runs to a completed video"
	sed 's/^/#   /' "$out.log" | tail -40
	echo "1..1"
	exit 1
fi
"$py" test/demo_check.py "$out" --first 2
