#!/usr/bin/env bash
#
# compare.sh - the side-by-side benchmark: smtp-sink (Postfix's discarding
# SMTP server, the ceiling for any server driven by this client), a private
# Postfix 3.7 instance with its durable queue, and vmrelay over kernel
# sockets, each driven by the same smtp-source load (or, with --load
# vmrelay-bench, by the project's own load generator), over loopback or,
# with --path veth, from a network namespace of its own across a veth pair
# (bench/netns.sh), as mail from a VPS crosses a device to reach a relay;
# there also vmrelay on DPDK, its SMTP on our own TCP/IP stack (--only
# ...,vmrelay-dpdk; bench/dpdk.sh).
# Prints msgs/s, wall time, server CPU seconds per 1000 messages and the
# ratios (with --load vmrelay-bench also sessions/s and the p99 latency of
# the final reply), and writes the same table to bench/RESULTS.md (see report.py),
# whose header names the path.
#
# Postfix and vmrelay relay alike: each hands its mail to a second
# smtp-sink of its own (Postfix's relayhost, vmrelay's [delivery]
# smarthost) while the load runs, and the next run starts once that sink has
# everything. msgs/s is of accepted mail (the load's 250s); bench/e2e.sh
# measures until the last message reached the far sink, DKIM-signed.
#
# Every figure is of verified, durable mail: a run counts only if the load
# exits 0 with nothing on stderr and the server then holds every message
# (smtp-sink counted them; Postfix logged, relayed and dequeued them;
# vmrelay logged each delivered once and its relay sink counted them).
# Anything else stops the benchmark and says why.
#
# Each engine starts fresh in every round (new instance, empty queue) and
# gets a short warm-up, so rounds are independent; the engines take turns,
# their order rotating each round, so machine noise falls on all alike. All
# state lives in one work directory on a real disk (never tmpfs), and every
# process started here is stopped on exit, however the script ends.
set -euo pipefail

PROG=compare.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
COMMAND="bench/compare.sh${*:+ $*}"

ROUNDS=3 MESSAGES=20000 SESSIONS=20 SIZE=6000 WORKERS=2 WARMUP=200 TIMEOUT=600
ONLY=sink,postfix,vmrelay
VMRELAY='' VMRELAY_SPOOL='' WORK='' KEEP=0 RESULTS='' NO_RESULTS=0
LOAD=smtp-source VMRELAY_BENCH='' NET_PATH=loopback
VR_DELIVER=1    # lib.sh: vmrelay delivers to a relay sink, as Postfix does

usage() {
	cat <<EOF
usage: bench/compare.sh [options]     (as root)
  --rounds N           measured runs per engine; the median is reported ($ROUNDS)
  --messages M         messages per measured run ($MESSAGES)
  --sessions S         parallel SMTP sessions, each reusing its connection ($SESSIONS)
  --size BYTES         payload bytes per message, headers not included ($SIZE;
                       with vmrelay-bench: the whole message, headers included)
  --load NAME          the load generator: smtp-source or vmrelay-bench ($LOAD)
  --vmrelay-bench PATH use this vmrelay-bench binary (default: built in build-bench/)
  --path PATH          the network path from the load to the servers: loopback,
                       or veth (the load in a namespace of its own, across a veth
                       pair, $NS_PEER_ADDR -> $NS_HOST_ADDR) ($NET_PATH)
  --only LIST          engines, comma separated, of: sink,postfix,vmrelay,
                       vmrelay-dpdk (--path veth only) ($ONLY)
  --workers W          vmrelay worker threads ($WORKERS)
  --warmup M           messages sent before each measured run, 0 for none ($WARMUP)
  --timeout S          bound in seconds on each load run and queue drain ($TIMEOUT)
  --vmrelay PATH       use this vmrelay binary as is (default: build build-bench/
                       with --buildtype=release and use its dpdk-app/vmrelay)
  --vmrelay-spool PATH the spool lister (default: the one in the same build)
  --workdir DIR        keep instances and spools in DIR, and leave it there
                       (default: a new directory under /var/tmp, removed at exit)
  --keep               do not remove the default work directory
  --results FILE       write the table and run details to FILE (default:
                       bench/RESULTS.md when all three engines run)
  --no-results         write no results file
EOF
}

VALUE_OPTS='--rounds --messages --sessions --size --only --workers --warmup --timeout
	--vmrelay --vmrelay-spool --workdir --results --load --vmrelay-bench --path'
FLAG_OPTS=''
set_opt() { return 1; }    # every option is one of lib.sh's
parse_args "$@"

# Engines, in the order of the first round.
parse_engines "$ONLY"

if ((NO_RESULTS)); then
	RESULTS=
elif [[ -z $RESULTS ]] && ((${#ENGINES[@]} == 3)); then
	RESULTS=$BENCH_DIR/RESULTS.md
fi

check_preconditions

use_net_path

# --- one measured run -------------------------------------------------------------

# run_engine ENGINE ROUND: fresh instance, warm-up, measured load, checks, stop.
run_engine() {
	local e=$1 round=$2 name dir total=0 fsync_ms wall cpu rc
	name=$(name_of "$e")
	dir=$WORK/$e-r$round
	rm -rf "$dir"    # a --workdir used before: start from nothing
	mkdir -p "$dir"
	"start_$e" "$dir"
	if ((WARMUP > 0)); then
		warm_up "$name" "$dir" "$PORT" "$WARMUP"
		total=$WARMUP
		"settle_$e" "$dir" "$total"
	fi
	# What a durable commit costs on the disk right now: it moves with other
	# I/O on the machine, and a durable queue's throughput moves with it.
	fsync_ms=$("$PY" "$BENCH_DIR/measure.py" fsync "$dir")
	load_cmd "$MESSAGES" "$PORT" "$dir/load.json"
	run_child "$PY" "$BENCH_DIR/measure.py" run "${TREE[@]/#/--tree=}" --timeout "$TIMEOUT" -- \
		"${LOAD_CMD[@]}" >"$dir/measure.out" 2>"$dir/load.err" ||
		die "$name: measure.py failed:"$'\n'"$(tail_of "$dir/load.err")"
	read -r wall cpu rc <<<"$(sed -E 's/[a-z_]+=//g' "$dir/measure.out")"
	((rc != 124)) || die "$name: $LOAD timed out after $TIMEOUT s:"$'\n'"$(tail_of "$dir/load.err")"
	((rc == 0)) || die "$name: $LOAD exited with status $rc:"$'\n'"$(tail_of "$dir/load.err")"
	[[ ! -s $dir/load.err ]] || die "$name: $LOAD reported errors:"$'\n'"$(tail_of "$dir/load.err")"
	total=$((total + MESSAGES))
	"verify_$e" "$dir" "$total"
	"stop_$e" "$dir"
	# sessions/s and the p99 of the final reply: vmrelay-bench's report has them
	lat='-	-'
	[[ $LOAD != vmrelay-bench ]] || lat=$("$PY" -c 'import json, sys; r = json.load(open(sys.argv[1]))
print("%.2f\t%.3f" % (r["sessions_per_s"], r["latency_ms"]["p99"]))' "$dir/load.json") ||
		die "$name: no sessions/s or p99 in $dir/load.json"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$MESSAGES" "$wall" "$cpu" "$fsync_ms" "$lat" >>"$RUNS"
	say "$(awk -v r="$round" -v n="$name" -v m="$MESSAGES" -v w="$wall" -v c="$cpu" -v f="$fsync_ms" -v v="$VERIFIED" \
		'BEGIN { printf "round %d: %-9s %6.0f msgs/s  %6.2f s  server CPU %5.2f s  fdatasync %.2f ms  (%d messages verified)", r, n, m / w, w, c, f, v }')"
}

# --- main --------------------------------------------------------------------------

prepare_workdir
resolve_bench
open_tables

if has_engine vmrelay || has_engine dpdk; then
	resolve_vmrelay
	# Fail now, not after the other engines' rounds, if vmrelay cannot start.
	for e in vmrelay dpdk; do
		has_engine $e || continue
		rm -rf "$WORK/$e-preflight"
		mkdir -p "$WORK/$e-preflight"
		"start_$e" "$WORK/$e-preflight"
		"stop_$e" "$WORK/$e-preflight"
	done
fi

meta_start
if [[ $NET_PATH == veth ]]; then
	meta path "veth: the load in network namespace vrb-PID ($NS_PEER_ADDR/24) across a veth pair to the servers on $NS_HOST_ADDR in the root namespace"
else
	meta path "loopback: the load and the servers on 127.0.0.1"
fi
meta warmup "$WARMUP"
PF_VERSION=$(postconf -d -h mail_version)
has_engine sink && meta engine_note "smtp-sink (Postfix $PF_VERSION's discarding server, -c counter): accepts and throws away; every run its counter showed every message."
has_engine postfix && meta engine_note "Postfix $PF_VERSION, a private instance (own config, queue and data directories under the work directory; master as root, daemons as user postfix; main.cf below, master.cf from bench/postfix/master.cf.in: Debian's services without chroot), durable queue (cleanup fsyncs each queue file before the 250), relaying to a second smtp-sink; every run: its log showed each message accepted by cleanup and status=sent, no reject, deferral or error and no warning other than those noted below, the relay sink counted every message and the queue was empty."
has_engine vmrelay && meta engine_note "vmrelay at $(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- engine dpdk-app include 2>/dev/null || echo ' (with uncommitted changes)'), kernel sockets, $WORKERS workers (configuration below), durable spool, delivering to a second smtp-sink ([delivery] smarthost) as Postfix relays to one; every run: its log showed one result=sent delivery for each message $LOAD got a 250 for (warm-up included) and no other attempt, its relay sink counted every message, \`vmrelay-spool DIR check\` found every record intact, and the log had no err or warn line."
has_engine dpdk && meta engine_note "vmrelay-dpdk: the same vmrelay with --io dpdk, $(dpdk_workers) poll-mode worker lcore(s) besides the main one, net_$DPDK_PMD (DPDK_PMD=$DPDK_PMD) on a veth pair of its own into the load's namespace ($DPDK_PEER_ADDR -> $DPDK_ADDR, bench/dpdk.sh), no hugepages; checked as vmrelay is. Its CPU figure includes the workers' polling."

run_rounds run_engine

meta_confs
if has_engine dpdk; then
	while IFS= read -r line; do meta dpdk_conf "$line"; done < <(grep -v '^;' "$WORK/dpdk-r1/relay.ini" |
		sed -E "s|$WORK/dpdk-r1|\$DIR|g; s|vrb[0-9]+d|vrbPIDd|")
fi
((PF_CLOCK_RUNS == 0)) || meta note "In $PF_CLOCK_RUNS of $ROUNDS Postfix runs cleanup warned that the file system clock was ahead of the local clock and reset queue file time stamps (\"this hurts performance\"): a trait of this machine that slows Postfix a little."
((PF_BACKLOG_RUNS == 0)) || meta note "In $PF_BACKLOG_RUNS of $ROUNDS Postfix runs qmgr warned that the relay's active queue entries were all in use: mail arrived faster than Postfix relayed it and its queue backed up; every message was still relayed, as checked."
meta_end

echo
"$PY" "$BENCH_DIR/report.py" "$RUNS" "$META" ${RESULTS:+--markdown "$RESULTS"}
[[ -z $RESULTS ]] || say "wrote $RESULTS"
