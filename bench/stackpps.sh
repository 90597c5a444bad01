#!/usr/bin/env bash
#
# stackpps.sh - the userspace stack's packets/s per core with no kernel
# anywhere (issue 3): two DPDK processes joined by net_memif, one a TCP sink,
# one sending over N connections (vmrelay-stackpps, bench/stackpps/), against
# dpdk-testpmd on the same kind of pair (txonly -> rxonly, full-size frames):
# the ceiling of the port itself. No hugepages; each process on a cpu of its
# own (cpu 0: the receiving side, cpu 1: the sending side).
#
# With --afpacket the pair is a veth pair driven through net_af_packet
# instead: the kind of path bench/compare.sh's vmrelay-dpdk runs on, where
# every frame still crosses the kernel's veth and packet sockets, so its
# testpmd figure is the ceiling of that path.
#
#   bench/stackpps.sh [--seconds S] [--conns N] [--build DIR] [--afpacket]   (as root)
#
# Prints one line per run and the ratio of the stack's data frames/s to
# testpmd's frames/s. Every process started here is stopped on exit.
set -euo pipefail

PROG=stackpps.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECONDS_RUN=8 CONNS=8 BUILD=$ROOT/build AFPACKET=''
die() { echo "$PROG: $*" >&2; exit 1; }

while (($#)); do
	case $1 in
	--seconds) SECONDS_RUN=${2:?}; shift 2 ;;
	--conns) CONNS=${2:?}; shift 2 ;;
	--build) BUILD=${2:?}; shift 2 ;;
	--afpacket) AFPACKET=1; shift ;;
	-h | --help) sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option '$1' (see --help)" ;;
	esac
done
[[ $SECONDS_RUN =~ ^[0-9]+$ ]] && ((SECONDS_RUN >= 3)) || die "--seconds wants an integer >= 3"
(($(id -u) == 0)) || die "must run as root (DPDK)"
PPS=$BUILD/bench/stackpps/vmrelay-stackpps
[[ -x $PPS ]] || die "$PPS not built: ninja -C $BUILD bench/stackpps/vmrelay-stackpps"
command -v dpdk-testpmd >/dev/null || die "dpdk-testpmd not found: run scripts/deps.sh (package dpdk-dev)"

WORK=$(mktemp -d /tmp/vmrelay-stackpps.XXXXXX)
PIDS=()
VETH=''
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[[ -z $VETH ]] || ip link del "${VETH}a" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -n $AFPACKET ]]; then
	# No addresses and no IPv6: the kernel sends nothing of its own on them.
	err=$(ip link add "vrpps$$a" type veth peer name "vrpps$$b" 2>&1) ||
		die "creating the veth pair vrpps$$a/vrpps$$b failed: $err"
	VETH=vrpps$$
	for side in a b; do
		sysctl -qw "net.ipv6.conf.$VETH$side.disable_ipv6=1"
		ip link set "$VETH$side" up
	done
fi

# EAL arguments of side $1 (a or b) on cpu $2, memif role $3 on socket $4.
eal() {
	local vdev=net_memif0,role=$3,socket=$WORK/$4.sock
	[[ -z $VETH ]] || vdev=net_af_packet0,iface=$VETH$1
	echo "--lcores 0@$2,1@$2 --no-huge -m 512 --no-pci --no-shconf --file-prefix=vrpps$$$1" \
		"--log-level=error --no-telemetry --vdev=$vdev"
}

# --- the ceiling: testpmd txonly -> rxonly ---
# shellcheck disable=SC2046
dpdk-testpmd $(eal a 0 server testpmd) -- --forward-mode=rxonly \
	--nb-cores=1 --total-num-mbufs=16384 --stats-period=1 --no-lsc-interrupt \
	>"$WORK/rx.log" 2>&1 &
PIDS+=($!)
sleep 1
# shellcheck disable=SC2046
dpdk-testpmd $(eal b 1 client testpmd) -- --forward-mode=txonly \
	--txpkts=1514 --nb-cores=1 --total-num-mbufs=16384 --stats-period=1 --no-lsc-interrupt \
	>"$WORK/tx.log" 2>&1 &
PIDS+=($!)
sleep "$SECONDS_RUN"
kill "${PIDS[@]}" 2>/dev/null || true
wait 2>/dev/null || true
PIDS=()
# the median of the receiver's per-second rates, the first left out
ceiling=$(grep -oE 'Rx-pps: +[0-9]+' "$WORK/rx.log" | awk '{print $2}' | awk '$1 > 0' | tail -n +2 |
	sort -n | awk '{a[NR] = $1} END { if (NR) print a[int((NR + 1) / 2)]; else print 0 }')
((ceiling > 0)) || die "dpdk-testpmd measured nothing; its logs:"$'\n'"$(tail -n 5 "$WORK/rx.log" "$WORK/tx.log")"
PAIR=${VETH:+"a veth pair through net_af_packet"}
PAIR=${PAIR:-net_memif}
echo "pair: $PAIR"
echo "dpdk-testpmd txonly->rxonly, 1514-byte frames: $ceiling frames/s (one way, one core each side)"

# --- the stack: a sink and a sender ---
# shellcheck disable=SC2046
"$PPS" $(eal a 0 server stack) -- --role server --ip 10.203.0.1/24 --seconds $((SECONDS_RUN + 4)) \
	>"$WORK/server.out" 2>"$WORK/server.err" &
PIDS+=($!)
sleep 1
# shellcheck disable=SC2046
"$PPS" $(eal b 1 client stack) -- --role client --ip 10.203.0.2/24 --peer 10.203.0.1 \
	--conns "$CONNS" --seconds "$SECONDS_RUN" >"$WORK/client.out" 2>"$WORK/client.err" ||
	die "the sending side failed:"$'\n'"$(tail -n 5 "$WORK/client.err")"
wait "${PIDS[0]}" || die "the sink failed:"$'\n'"$(tail -n 5 "$WORK/server.err")"
PIDS=()
echo "stack, sending core:   $(cat "$WORK/client.out")"
echo "stack, receiving core: $(cat "$WORK/server.out")"
awk -v c="$ceiling" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] } }
	END { printf "stack data frames/s: %.0f = %.0f%% of dpdk-testpmd (%d connections)\n",
		v["frames_out"] / v["seconds"], 100 * v["frames_out"] / v["seconds"] / c, v["connections"] }' \
	"$WORK/client.out"
