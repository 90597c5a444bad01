#!/usr/bin/env bash
#
# memif.sh - vmrelay with no kernel on the SMTP path, against vmrelay on
# kernel sockets, under the same load in one run (issue 7):
#
#   dpdk    vmrelay --io dpdk, one poll-mode worker lcore, its end of a
#           net_memif pair; vmrelay-bench --dpdk on the other end, its
#           sessions on our own TCP/IP stack too (one poll-mode lcore). No
#           hugepages, no NIC, no kernel socket between them.
#   kernel  vmrelay --io kernel, one worker, on 127.0.0.1; vmrelay-bench over
#           kernel sockets (loopback).
#
# Both relays are the same build with the same configuration
# (bench/vmrelay/relay*.ini.in, one worker, the spool on a real disk, mail
# kept in the spool: its next hop is a closed port) and get the same load:
# vmrelay-bench, S sessions reusing their connections, M messages of SIZE
# octets. Each process is pinned to a cpu of its own, as bench/stackpps.sh
# pins its two sides: the relay (every thread of it) on cpu 0, the load on
# cpu 1. Each round starts both relays fresh with a warm-up; the modes take
# turns, the order rotating each round. A run counts only if the load exits
# 0 and the spool then holds exactly the messages that got a 250.
#
#   bench/memif.sh [options]     (as root)
#
# Writes bench/RESULTS-memif.md (--results FILE elsewhere, --no-results not
# at all): the command, the machine and its load average, every run and the
# medians: msgs/s and the p99 of the final reply (vmrelay-bench's report),
# the relay's CPU seconds per 1000 messages (bench/measure.py, while the
# load ran) and the load generator's, and the ratios dpdk / kernel.
set -euo pipefail

PROG=memif.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
COMMAND="bench/memif.sh${*:+ $*}"

ROUNDS=3 MESSAGES=10000 SESSIONS=20 SIZE=6000 WARMUP=500 TIMEOUT=300 WORKERS=1
BUILD=$ROOT/build WORK='' KEEP=0 RESULTS=$BENCH_DIR/RESULTS-memif.md NO_RESULTS=0 PIPELINING=''
MEMIF_ADDR=10.204.0.1 MEMIF_PEER_ADDR=10.204.0.2 MEMIF_PORT=25
# The pair's socket: short, since the relay's eal line is at most 198 octets.
MEMIF_SOCK=/run/vrbm$$.sock
VALUE_OPTS="--rounds --messages --sessions --size --warmup --timeout --build --workdir --results"
FLAG_OPTS="--pipelining"

usage() {
	cat <<EOF
usage: bench/memif.sh [options]     (as root)
  --rounds N       measured runs per mode; the median is reported ($ROUNDS)
  --messages M     messages per measured run ($MESSAGES)
  --sessions S     parallel SMTP sessions, each reusing its connection ($SESSIONS)
  --size BYTES     octets per message, headers included ($SIZE)
  --pipelining     MAIL, RCPT and DATA in one write
  --warmup N       messages sent to each fresh relay before measuring ($WARMUP)
  --timeout S      the longest a run may take ($TIMEOUT)
  --build DIR      the build with vmrelay, vmrelay-bench, vmrelay-spool (build/)
  --workdir DIR    keep the relays' directories there (default: a temporary
                   directory under /var/tmp, removed at exit)
  --keep           keep the work directory
  --results FILE   write the results there ($RESULTS)
  --no-results     print the table only
EOF
}

set_opt() {
	case $1 in
	--build) BUILD=$2 ;;
	--pipelining) PIPELINING=1 ;;
	*) return 1 ;;
	esac
}

parse_args "$@"
(($(id -u) == 0)) || die "must run as root (DPDK)"
(($(nproc) >= 2)) || die "needs 2 cpus: the relay on cpu 0, the load on cpu 1"
command -v taskset >/dev/null || die "taskset not found (package util-linux)"
[[ -x /usr/bin/time ]] || die "/usr/bin/time not found: run scripts/deps.sh (package time)"
VMRELAY=$BUILD/dpdk-app/vmrelay
VMRELAY_SPOOL=$BUILD/engine/spool/vmrelay-spool
VMRELAY_BENCH=$BUILD/bench/vmrelay-bench/vmrelay-bench
for b in "$VMRELAY" "$VMRELAY_SPOOL" "$VMRELAY_BENCH"; do
	[[ -x $b ]] || die "$b not built: ninja -C $BUILD"
done
prepare_workdir
ENGINES=(kernel dpdk)
RUNS=$WORK/runs.tsv META=$WORK/meta.tsv
: >"$RUNS"
: >"$META"

# --- the two relays ------------------------------------------------------------

# lib.sh's relay on loopback, then every thread of it on cpu 0 (the threads
# it starts later inherit that).
start_kernel() {
	SERVER_ADDR=127.0.0.1
	start_vmrelay "$1"
	taskset -a -p -c 0 "$VR_PID" >/dev/null
}

# The same relay with --io dpdk on the server end of a memif pair whose
# socket is in its directory; main and worker lcore on cpu 0.
start_dpdk() {
	local dir=$1 i
	PORT=$MEMIF_PORT
	subst "$BENCH_DIR/vmrelay/relay-dpdk.ini.in" "$dir/relay.ini" DIR="$dir" PORT="$PORT" \
		WORKERS=1 MAX_CONN=$((SESSIONS + 16)) LCORES="--lcores 0@0,1@0" \
		VDEV="net_memif0,role=server,socket=$MEMIF_SOCK" ADDR="$MEMIF_ADDR" \
		SMARTHOST=127.0.0.1:1
	# a prefix of our own: bench/compare.sh's relay may use vrb
	sed -i "s|--file-prefix=vrb |--file-prefix=vrbm$$ |" "$dir/relay.ini"
	grep -q -- "--file-prefix=vrbm$$ " "$dir/relay.ini" ||
		die "bench/vmrelay/relay-dpdk.ini.in changed: cannot set the EAL's --file-prefix"
	cp "$BENCH_DIR/vmrelay/accounts.jsonl.in" "$dir/accounts.jsonl"
	sed -i -E "s|(\"id\":\"bench\",\"ips\":\[)|\1\"$MEMIF_PEER_ADDR\",|" "$dir/accounts.jsonl"
	grep -q "\"ips\":\[\"$MEMIF_PEER_ADDR\"," "$dir/accounts.jsonl" ||
		die "bench/vmrelay/accounts.jsonl.in changed: cannot add $MEMIF_PEER_ADDR to the bench account"
	rm -f "$MEMIF_SOCK"
	taskset -c 0 "$VMRELAY" -c "$dir/relay.ini" >"$dir/vmrelay.log" 2>&1 &
	VR_PID=$!
	CHILDREN+=("$VR_PID")
	for ((i = 0; i < 150; i++)); do
		grep -q 'event=start .*io=dpdk' "$dir/vmrelay.log" && break
		kill -0 "$VR_PID" 2>/dev/null || die "vmrelay --io dpdk exited; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
		sleep 0.1
	done
	((i < 150)) || die "vmrelay --io dpdk did not start in 15 s; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
}

# --- the load --------------------------------------------------------------------

# load ENGINE DIR COUNT REPORT: sets LOAD_CMD, vmrelay-bench on cpu 1.
load() {
	local e=$1 dir=$2 count=$3 report=$4
	LOAD_CMD=(taskset -c 1 "$VMRELAY_BENCH" --sessions "$SESSIONS" --size "$SIZE" --reuse
		${PIPELINING:+--pipelining} --helo bench.example --from bench@bench.example
		--to sink@sink.example --timeout 60 --messages "$count" --json --output "$report")
	if [[ $e == dpdk ]]; then
		LOAD_CMD+=(--target "$MEMIF_ADDR:$MEMIF_PORT" --dpdk-ip "$MEMIF_PEER_ADDR/24" --dpdk
			"--lcores 0@1 --no-huge -m 512 --no-pci --no-shconf --file-prefix=vrbm$$c --log-level=error --no-telemetry --vdev=net_memif0,role=client,socket=$MEMIF_SOCK")
	else
		LOAD_CMD+=(--target "127.0.0.1:$PORT")
	fi
}

# The load as the results show it.
load_shown() {
	local PORT=PORT
	load "$1" DIR "$MESSAGES" REPORT
	local arg out=vmrelay-bench
	for arg in "${LOAD_CMD[@]:4}"; do
		[[ $arg == *" "* ]] && arg="'$arg'"
		out+=" $arg"
	done
	echo "${out//vrbm$$/vrbmPID}"
}

# run_one ENGINE ROUND: fresh relay, warm-up, measured load, checks, stop.
run_one() {
	local e=$1 round=$2 dir=$WORK/$1-r$2 total=0 rc=0 cpu lrc
	rm -rf "$dir"
	mkdir -p "$dir"
	"start_$e" "$dir"
	if ((WARMUP > 0)); then
		load "$e" "$dir" "$WARMUP" "$dir/warmup.json"
		run_child timeout "$TIMEOUT" "${LOAD_CMD[@]}" >"$dir/warmup.out" 2>"$dir/warmup.err" || rc=$?
		((rc == 0)) || die "$e: warm-up failed (exit $rc):"$'\n'"$(tail_of "$dir/warmup.err")"
		total=$WARMUP
	fi
	load "$e" "$dir" "$MESSAGES" "$dir/load.json"
	run_child "$PY" "$BENCH_DIR/measure.py" run --tree="$VR_PID" --timeout "$TIMEOUT" -- \
		/usr/bin/time -f '%U %S' -o "$dir/load.time" "${LOAD_CMD[@]}" \
		>"$dir/measure.out" 2>"$dir/load.err" ||
		die "$e: measure.py failed:"$'\n'"$(tail_of "$dir/load.err")"
	read -r _ cpu lrc <<<"$(sed -E 's/[a-z_]+=//g' "$dir/measure.out")"
	((lrc == 0)) || die "$e: vmrelay-bench exited with status $lrc:"$'\n'"$(tail_of "$dir/load.err")"$'\n'"failures and errors by reply: $("$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d.get("failures"), d.get("errors"), d.get("transport"))' "$dir/load.json" 2>&1)"
	total=$((total + MESSAGES))
	verify_vmrelay "$dir" "$total"
	stop_vmrelay "$dir"
	"$PY" - "$dir/load.json" "$dir/load.time" "$e" "$round" "$cpu" >>"$RUNS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
u, s = (float(x) for x in open(sys.argv[2]).read().split()[-2:])
k = r["messages"]["accepted"] / 1000
print("\t".join([sys.argv[3], sys.argv[4], "%.1f" % r["msgs_per_s"], "%.3f" % r["latency_ms"]["p50"],
                 "%.3f" % r["latency_ms"]["p99"], "%.3f" % (float(sys.argv[5]) / k),
                 "%.3f" % ((u + s) / k), r["transport"]]))
EOF
	say "round $round: $(tail -n 1 "$RUNS" | awk -F'\t' '{ printf "%-6s %8s msgs/s  p99 %s ms  relay CPU %s s/1000  load CPU %s s/1000", $1, $3, $5, $6, $7 }')"
}

meta date "$(date -u '+%Y-%m-%d %H:%M UTC')"
meta loadavg_start "$(cut -d' ' -f1-3 /proc/loadavg)"
meta nproc "$(nproc)"
meta cpu "$(grep -m 1 '^model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
meta kernel "$(uname -srm)"
meta disk "$(disk_of "$WORK")"
meta fsync_ms "$("$PY" "$BENCH_DIR/measure.py" fsync "$WORK")"
meta commit "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
meta command "$COMMAND"
meta load_kernel "$(load_shown kernel)"
meta load_dpdk "$(load_shown dpdk)"
say "work directory $WORK; $ROUNDS rounds of $MESSAGES messages, modes: ${ENGINES[*]}"
run_rounds run_one
meta loadavg_end "$(cut -d' ' -f1-3 /proc/loadavg)"

OUT=/dev/null
((NO_RESULTS)) || OUT=$RESULTS
"$PY" - "$RUNS" "$META" "$ROUNDS" "$MESSAGES" "$SESSIONS" "$SIZE" <<'EOF' | tee "$OUT"
import statistics, sys
runs = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
meta = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[2]) if l.strip()]
m = dict(meta)
rounds, messages, sessions, size = sys.argv[3:7]
med = {}
for mode in ("kernel", "dpdk"):
    rs = [r for r in runs if r[0] == mode]
    med[mode] = [statistics.median(float(r[i]) for r in rs) for i in (2, 3, 4, 5, 6)]
k, d = med["kernel"], med["dpdk"]
print("# vmrelay over net_memif (no kernel on the SMTP path) against kernel sockets\n")
print("Written by `%s` (bench/memif.sh; do not edit by hand), %s, at commit %s." %
      (m["command"], m["date"], m["commit"]))
print("Machine: %s cpus, %s, %s; spool disk %s (write+fdatasync %s ms)." %
      (m["nproc"], m["cpu"], m["kernel"], m["disk"], m["fsync_ms"]))
print("Load average: %s at the start, %s at the end (other engineers' builds and tests"
      " share this machine: compare the ratios, measured in the same run, rather than"
      " the absolute figures).\n" % (m["loadavg_start"], m["loadavg_end"]))
print("- **dpdk**: `vmrelay --io dpdk`, one poll-mode worker lcore, the server end of a"
      " net_memif pair (no hugepages, no NIC), driven by `%s`: vmrelay-bench's sessions on"
      " our userspace TCP/IP stack too, one poll-mode lcore." % m["load_dpdk"])
print("- **kernel**: `vmrelay --io kernel`, one worker, on 127.0.0.1, driven by `%s` over"
      " kernel sockets.\n" % m["load_kernel"])
print("The relay (every thread) runs on cpu 0, the load generator on cpu 1. Each round"
      " starts both relays fresh with a warm-up; the modes alternate, the order rotating"
      " each round. Every run is checked: vmrelay-bench exits 0 and the spool holds"
      " exactly the messages that got a 250 (the mail stays there: its next hop is a"
      " closed port). msgs/s and the p99 of the final reply (after the message's last"
      " octet left) are vmrelay-bench's; relay CPU is the relay's user+system time while"
      " the load ran (bench/measure.py, which includes the DPDK load generator's ~1 s of"
      " EAL start-up, the relay idle), load CPU the load generator's (the DPDK client"
      " polls without pause: its figure is the cpu time it was given). The transport"
      " column has the DPDK client's TCP retransmissions by kind and its port's losses:"
      " on a shared machine a userspace stack acknowledges only when its process runs"
      " (the kernel's loopback acknowledges in the sender's own system call), so a relay"
      " or client descheduled for a while shows as tail loss probes (tlp) or, past"
      " 200 ms, retransmission timeouts (rto) of every session at once.\n")
print("## Medians of %s rounds, %s messages each, %s sessions, %s octets\n" %
      (rounds, messages, sessions, size))
print("| mode | msgs/s | p50 ms | p99 ms | relay CPU s/1000 msgs | load CPU s/1000 msgs |")
print("|---|---:|---:|---:|---:|---:|")
for mode in ("dpdk", "kernel"):
    v = med[mode]
    print("| %s | %.0f | %.3f | %.3f | %.3f | %.3f |" % (mode, v[0], v[1], v[2], v[3], v[4]))
print("| **dpdk / kernel** | **%.2fx** | %.2fx | %.2fx | %.2fx | %.2fx |\n" %
      (d[0] / k[0], d[1] / k[1], d[2] / k[2], d[3] / k[3], d[4] / k[4]))
print("## Every run\n")
print("| mode | round | msgs/s | p50 ms | p99 ms | relay CPU s/1000 | load CPU s/1000 | transport |")
print("|---|---:|---:|---:|---:|---:|---:|---|")
for r in runs:
    print("| %s |" % " | ".join(r))
EOF
rm -f "$MEMIF_SOCK"
((NO_RESULTS)) || say "wrote $RESULTS"
