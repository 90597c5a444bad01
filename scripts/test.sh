#!/usr/bin/env bash
# Everything vmrelay has for tests, on a fresh Debian 12 machine, as root:
# dependencies, a debugoptimized build, the unit tests, the same unit tests
# under ASan+UBSan, short libFuzzer runs of every harness, and the
# end-to-end tests. Each unit test program, sanitizer run, fuzz run and
# end-to-end test case counts once; the last line is exactly
# "N passed, N failed" (", N skipped" when some were). Exit 1 on any failure.
#
#   scripts/test.sh            FUZZ_SECONDS=N (default 10) per harness
set -uo pipefail

. "$(dirname "$0")/lib.sh"
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-10}
passed=0 failed=0 skipped=0

fail_step() {        # a step that is not a test (a build) failed
	echo "FAIL  $1"
	failed=$((failed + 1))
}

# count_meson DIR LABEL: tallies the unit tests of the last `meson test` in DIR
# and prints the output of each that did not pass.
count_meson() {
	local counts
	counts=$("$PY" - "$1/meson-logs/testlog.json" "$2" <<'PYEOF'
import json, sys
passed = failed = skipped = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    name, result = "%s %s" % (sys.argv[2], t["name"]), t["result"]
    if result == "OK":
        passed += 1
        print("ok    %s (%.1fs)" % (name, t["duration"]), file=sys.stderr)
    elif result == "SKIP":
        skipped += 1
        print("skip  %s" % name, file=sys.stderr)
    else:
        failed += 1
        print("FAIL  %s: %s\n%s" % (name, result, (t.get("stdout") or "")[-8000:]),
              file=sys.stderr)
print(passed, failed, skipped)
PYEOF
	) || { fail_step "$2: cannot read the test log"; return; }
	read -r p f s <<<"$counts"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

say "dependencies (scripts/deps.sh)"
bash scripts/deps.sh || { echo "deps.sh failed"; echo "0 passed, 1 failed"; exit 1; }

say "build (build/, debugoptimized)"
if ensure_build build --buildtype=debugoptimized; then
	say "unit tests"
	meson test -C build --suite unit --no-rebuild --print-errorlogs >/dev/null 2>&1
	count_meson build unit
else
	fail_step "build"
fi

say "unit tests under ASan+UBSan (build-asan/)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:abort_on_error=1:print_stacktrace=1
if ensure_build build-asan --buildtype=debug -Db_sanitize=address,undefined; then
	meson test -C build-asan --suite unit --no-rebuild --timeout-multiplier 3 \
		>/dev/null 2>&1
	count_meson build-asan asan
else
	fail_step "build-asan"
fi
unset ASAN_OPTIONS UBSAN_OPTIONS

say "fuzz harnesses, ${FUZZ_SECONDS}s each (build-fuzz/, clang)"
if [ -f tests/fuzz/meson.build ]; then
	if [ ! -f build-fuzz/build.ninja ]; then
		CC=clang meson setup build-fuzz --buildtype=debugoptimized -Dfuzz=true \
			-Db_sanitize=address,undefined -Db_lundef=false >/dev/null 2>&1
	fi
	if ensure_build build-fuzz -Dfuzz=true; then
		harnesses=$(find build-fuzz/tests/fuzz -maxdepth 1 -type f -name 'fuzz_*' \
			-perm -u+x | sort)
		[ -n "$harnesses" ] || echo "no harness built"
		# A crashing input is kept here, to replay: HARNESS FILE
		mkdir -p build-fuzz/artifacts
		for h in $harnesses; do
			name=$(basename "$h")
			corpus=$(mktemp -d)
			# Seeds in tests/fuzz/corpus/<harness>, a dictionary per module
			# (tests/fuzz/smtp.dict for fuzz_smtp_*), both optional.
			opts=(-artifact_prefix=build-fuzz/artifacts/"$name"-)
			seeds=tests/fuzz/corpus/${name#fuzz_}
			dict=tests/fuzz/$(cut -d_ -f2 <<<"$name").dict
			[ -f "$dict" ] && opts+=("-dict=$dict")
			if out=$("$h" -max_total_time="$FUZZ_SECONDS" -print_final_stats=1 \
				"${opts[@]}" "$corpus" $([ -d "$seeds" ] && echo "$seeds") 2>&1); then
				runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' <<<"$out" |
					grep -o '[0-9]*$')
				echo "ok    fuzz $name (${runs:-?} runs)"
				passed=$((passed + 1))
			else
				echo "FAIL  fuzz $name"
				tail -60 <<<"$out"
				failed=$((failed + 1))
			fi
			rm -rf "$corpus"
		done
	else
		fail_step "build-fuzz"
	fi
else
	echo "no fuzz harnesses (tests/fuzz/meson.build)"
fi

say "end-to-end tests (tests/e2e, real clients against vmrelay --io kernel)"
if [ -x build/dpdk-app/vmrelay ]; then
	e2e_log=$(mktemp)
	VMRELAY_BUILD=$ROOT/build "$PY" tests/e2e/run.py 2>&1 | tee "$e2e_log"
	line=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$e2e_log" | tail -1)
	if [ -n "$line" ]; then
		read -r p f s <<<"$(sed -E 's/e2e: ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped/\1 \2 \3/' <<<"$line")"
		passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	else
		fail_step "e2e runner (no summary line)"
	fi
	rm -f "$e2e_log"
else
	fail_step "e2e (no build/dpdk-app/vmrelay)"
fi

echo
summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
