#!/usr/bin/env bash
# Tests of hagen-compile (src/hagen-compile), the FFmpeg helper, against its CLI
# contract: probe, compile (modes copy / copy_video / normalize, music,
# transitions, A/V sync at every boundary, damaged media, a re-encode split
# into a plan, chunks and a join) and frame.
#
#   bash test/compile/run.sh [CASE...]      # cases 1-11 (cases.py), default all
#   KEEP=1 bash test/compile/run.sh         # keep the fixtures and outputs
#
# Prints TAP ("ok N - ...", "not ok N - ...", "# ..."); exits 1 on any
# failure.  Fixtures are made with the ffmpeg CLI at 320x180 (fixtures.sh);
# every figure is checked with ffprobe/ffmpeg or from the bytes (media.py),
# not only with what hagen-compile reports.  Run from anywhere, as any user
# who can build src/hagen-compile.
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
here=test/compile
n=0

tap_fail() { n=$((n + 1)); echo "not ok $n - $1"; shift; for l in "$@"; do echo "#   $l"; done; }
tap_ok() { n=$((n + 1)); echo "ok $n - $1"; }

missing=()
for tool in ffmpeg ffprobe python3 make cc pkg-config; do
	command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
	tap_fail "the tools are installed" "missing: ${missing[*]} (bash test/deps.sh installs them)"
	exit 1
fi

log=$(mktemp /tmp/hagen-compile-build.XXXXXX)
if make -s -C src/hagen-compile >"$log" 2>&1 && [ -x src/hagen-compile/hagen-compile ]; then
	if grep -q 'warning:' "$log"; then
		tap_fail "hagen-compile builds without warnings" "$(grep 'warning:' "$log" | head -5)"
	else
		tap_ok "hagen-compile builds (make -C src/hagen-compile)"
	fi
else
	tap_fail "hagen-compile builds (make -C src/hagen-compile)" "$(tail -20 "$log")"
	rm -f "$log"
	exit 1
fi
rm -f "$log"

tmp=$(mktemp -d /tmp/hagen-compile-test.XXXXXX)
if [ -n "${KEEP:-}" ]; then echo "# fixtures and outputs kept in $tmp"; else trap 'rm -rf "$tmp"' EXIT; fi
start=$SECONDS
if bash "$here/fixtures.sh" "$tmp" >"$tmp/fixtures.log" 2>&1; then
	tap_ok "fixtures made with the ffmpeg CLI ($((SECONDS - start)) s)"
else
	tap_fail "fixtures made with the ffmpeg CLI" "$(tail -20 "$tmp/fixtures.log")"
	exit 1
fi

python3 "$here/cases.py" --first $((n + 1)) "$tmp" "$root/src/hagen-compile/hagen-compile" "$@"
rc=$?
echo "# test/compile took $((SECONDS)) s"
exit $rc
