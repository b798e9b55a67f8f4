#!/usr/bin/env bash
# The whole hagenkit test suite: build, pg_regress, isolation and TAP tests
# (each against a throwaway instance run as the postgres user), then the
# suites of the simulators and of the compile helper.  Ends with
# "N passed, N failed".  Run as root on Debian 12.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bash test/deps.sh || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failures=()

# Records one test result.
result() {
	if [ "$1" = ok ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$2"); fi
}

# Counts pg_regress / isolation results ("name ... ok" / "name ... FAILED").
count_regress() {
	local log=$1 suite=$2 line name
	while IFS= read -r line; do
		name=$(sed -E 's/^(test )?[[:space:]]*([^ ]+).*/\2/' <<<"$line")
		if grep -qE '\.\.\. ok' <<<"$line"; then result ok "$suite/$name"; else result fail "$suite/$name"; fi
	done < <(grep -E '\.\.\. (ok|FAILED|failed)' "$log")
}

# Counts TAP results ("ok N - ..." / "not ok N - ...") at any indentation
# that belongs to the top level of the stream.
count_tap() {
	local log=$1 suite=$2 line
	while IFS= read -r line; do
		case "$line" in
			"not ok "*) result fail "$suite: ${line#not ok }" ;;
			"ok "*) result ok "$suite" ;;
		esac
	done < "$log"
}

stage() { printf '\n=== %s\n' "$*"; }

# 1. Build and install; the build must print no warnings.
stage "build"
make -s clean >/dev/null 2>&1
if make -s 2>build.log && make -s install >/dev/null 2>>build.log; then
	if grep -q 'warning:' build.log; then
		grep 'warning:' build.log
		result fail "build: compiler warnings"
	else
		result ok "build"
	fi
else
	cat build.log
	result fail "build"
	echo "$passed passed, $failed failed"
	exit 1
fi
rm -f build.log

# 2. A scratch copy owned by postgres (the server refuses to run as root).
scratch=$(mktemp -d /tmp/hagenkit-test.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
tar --exclude=.git --exclude=node_modules --exclude=tmp_check --exclude=tmp_check_iso \
	--exclude=results --exclude=output_iso -cf - . | tar -xf - -C "$scratch"
[ -d node_modules ] && ln -s "$root/node_modules" "$scratch/node_modules"
chown -R postgres "$scratch"
chmod 755 "$scratch"
# PATH and PG_CONFIG go along, so that a private PostgreSQL installation
# (PG_CONFIG=/elsewhere/bin/pg_config) is the one tested.
as_pg() { su postgres -s /bin/bash -c "cd '$scratch' && export PATH='$PATH' PG_CONFIG='${PG_CONFIG:-pg_config}' && $*"; }

stage "pg_regress"
as_pg "make installcheck TEMP_INSTANCE=1 ISOLATION= TAP_TESTS=" >"$scratch/regress.log" 2>&1
cat "$scratch/regress.log" | grep -E '\.\.\. ' || cat "$scratch/regress.log"
count_regress "$scratch/regress.log" regress
[ -f "$scratch/regression.diffs" ] && cat "$scratch/regression.diffs"

stage "isolation"
as_pg "make installcheck TEMP_INSTANCE=1 REGRESS= TAP_TESTS=" >"$scratch/isolation.log" 2>&1
grep -E '\.\.\. ' "$scratch/isolation.log" || cat "$scratch/isolation.log"
count_regress "$scratch/isolation.log" isolation
[ -f "$scratch/output_iso/regression.diffs" ] && cat "$scratch/output_iso/regression.diffs"

stage "TAP (PostgreSQL::Test::Cluster)"
as_pg "make installcheck REGRESS= ISOLATION= PROVE_FLAGS=-v" >"$scratch/tap.log" 2>&1
grep -E '^(ok|not ok|#)' "$scratch/tap.log" || cat "$scratch/tap.log"
count_tap "$scratch/tap.log" tap
if grep -qE '^(Bailout|.*Dubious|Parse errors)' "$scratch/tap.log"; then
	result fail "tap: a test script died"
	for f in "$scratch"/tmp_check/log/*.log; do [ -f "$f" ] && tail -n 40 "$f"; done
fi

# 3. The suites of the other components: the simulators' contracts and
# hagen-compile's own suite.
stage "simulators (node --test)"
node --test --test-reporter=tap test/sim/test/ >"$scratch/node.log" 2>&1
grep -E '^# (pass|fail)' "$scratch/node.log"
p=$(sed -nE 's/^# pass ([0-9]+)/\1/p' "$scratch/node.log" | tail -1)
f=$(sed -nE 's/^# fail ([0-9]+)/\1/p' "$scratch/node.log" | tail -1)
passed=$((passed + ${p:-0}))
failed=$((failed + ${f:-0}))
[ "${f:-0}" != 0 ] && { failures+=("simulators: $f failed"); grep -B2 -A20 '^not ok' "$scratch/node.log" | head -80; }
[ -z "$p" ] && { result fail "simulators: no result"; tail -30 "$scratch/node.log"; }

stage "test/compile/run.sh"
bash test/compile/run.sh >"$scratch/suite.log" 2>&1
rc=$?
grep -E '^(not ok|# )' "$scratch/suite.log" | head -50
count_tap "$scratch/suite.log" test/compile/run.sh
if [ $rc != 0 ] && ! grep -q '^not ok' "$scratch/suite.log"; then
	result fail "test/compile/run.sh exited with $rc"
	tail -30 "$scratch/suite.log"
fi

# The demo as a test: run at a fiftieth of its pacing, its pictures and
# clips checked against its photos (TAP).
stage "test/demo_check.sh"
bash test/demo_check.sh >"$scratch/demo.log" 2>&1
rc=$?
grep -E '^(not ok|ok|# )' "$scratch/demo.log" | head -50
count_tap "$scratch/demo.log" test/demo_check.sh
if [ $rc != 0 ] && ! grep -q '^not ok' "$scratch/demo.log"; then
	result fail "test/demo_check.sh exited with $rc"
	tail -30 "$scratch/demo.log"
fi

stage "summary"
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
