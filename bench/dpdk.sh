# dpdk.sh - engine vmrelay-dpdk of bench/compare.sh (sourced by lib.sh, not
# run): vmrelay with --io dpdk, its SMTP on our userspace TCP/IP stack over
# the PMD that DPDK_PMD names (af_xdp, the default: net_af_xdp, an AF_XDP
# socket with an XDP program on the veth; af_packet: net_af_packet),
# measured on the veth path like the other engines:
# `DPDK_PMD=af_packet bench/compare.sh ...`.
# DPDK_VDEV_ARGS adds the PMD's own options to its --vdev (busy_budget=0).
#
# The relay needs an interface the kernel leaves alone, so it runs in a
# network namespace of its own, vrb-PID-d, with a veth pair into the load's
# namespace (bench/netns.sh makes that): vrbPIDd in the relay's namespace,
# without an address, driven by DPDK, and vrbPIDe in the load's with
# DPDK_PEER_ADDR. The load reaches the relay at DPDK_ADDR through it: the
# same kind of path, one device pair, as the kernel engines' NS_HOST_ADDR.
# The pair and the namespace go at exit (dpdk_link_down, from cleanup).
#
# Worker lcores: [io] workers, but at most one less than the machine has
# cpus (the EAL's main lcore keeps one for the spool and delivery threads).
# On a 2-cpu machine that is one: two workers there (--lcores 0@0,1@0,2@1,
# qpairs=2) took twice the cpu per message (0.19-0.23 s per 1000 against
# 0.10), since net_af_packet's kernel fanout puts about half the frames on
# the queue of the worker that does not own their flow (lcore.c passes them
# on) and every frame wakes both workers (dpdk-app/wake.c).

# af_xdp by default: against kernel mode in the same run, two runs each on a
# busy 2-cpu machine, net_af_xdp made 0.77x and 0.86x (CPU 0.247 and 0.239 s
# per 1000 messages), net_af_packet 0.40x and 0.53x (0.269 and 0.241; kernel
# mode 0.146-0.161). Neither beats kernel mode on a veth: see
# bench/RESULTS-dpdk.md.
DPDK_PMD=${DPDK_PMD:-af_xdp}
case $DPDK_PMD in
af_packet | af_xdp) ;;
*) echo "dpdk.sh: DPDK_PMD='$DPDK_PMD' is neither af_packet nor af_xdp" >&2; exit 2 ;;
esac
DPDK_ADDR=10.202.0.1
DPDK_PEER_ADDR=10.202.0.2
DPDK_RELAY_PORT=2525  # the relay sink's, in the relay's namespace (nothing else there)
DPDK_IF=''          # set once the pair exists
DPDK_NS=''          # set once the relay's namespace exists
DPDK_SAVED_ADDRS=()

# The load's interface fills in its TCP checksums itself, as a NIC would
# have: over a veth the kernel otherwise leaves them for a NIC that is not
# there, and the relay sees them as corrupt (`ethtool -K IF tx off`).
dpdk_tx_csum_off() {
	ip netns exec "$NS_NAME" "$PY" -c '
import ctypes, fcntl, socket, struct, sys
ev = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))        # ETHTOOL_STXCSUM
ifr = struct.pack("16sP", sys.argv[1].encode(), ctypes.addressof(ev))
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)  # SIOCETHTOOL
' "$1"
}

# dpdk_link_up: the relay's pair, once per run. Dies, saying why.
dpdk_link_up() {
	local ns=vrb-$$-d relay=vrb$$d peer=vrb$$e err i q
	[[ -z $DPDK_IF ]] || return 0
	q=$(dpdk_workers)
	[[ -n $NS_NAME ]] || die "vmrelay-dpdk runs on the veth path only: add --path veth"
	err=$(ip netns add "$ns" 2>&1) || die "vmrelay-dpdk: ip netns add $ns failed: $err"
	DPDK_NS=$ns
	# One queue per worker at both ends: net_af_xdp binds a socket to each
	# of the relay's rx queues, a frame the peer sends on tx queue i arrives
	# on rx queue i (one past our sockets would go to the kernel), and veth
	# refuses XDP with fewer rx queues than its peer has tx queues.
	err=$(ip link add "$relay" netns "$ns" numtxqueues "$q" numrxqueues "$q" type veth \
		peer name "$peer" netns "$NS_NAME" numtxqueues "$q" numrxqueues "$q" 2>&1) ||
		die "vmrelay-dpdk: creating the veth pair $relay/$peer failed: $err"
	DPDK_IF=$relay
	err=$( { ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$relay.disable_ipv6=1" &&
		ip -n "$ns" link set lo up &&
		ip -n "$ns" link set "$relay" up &&
		ip -n "$NS_NAME" addr add "$DPDK_PEER_ADDR/24" dev "$peer" &&
		ip -n "$NS_NAME" link set "$peer" up &&
		dpdk_tx_csum_off "$peer"; } 2>&1) ||
		die "vmrelay-dpdk: setting up the pair failed: $err"
	for ((i = 0; i < 50; i++)); do
		[[ $(ip -n "$ns" -o link show "$relay") == *LOWER_UP* ]] && return 0
		sleep 0.1
	done
	die "vmrelay-dpdk: the pair $relay/$peer did not come up"
}

# dpdk_link_down: removes the relay's namespace, and with it the pair.
dpdk_link_down() {
	[[ -n $DPDK_NS ]] || return 0
	ip netns del "$DPDK_NS" 2>/dev/null || say "could not remove namespace $DPDK_NS: remove it with 'ip netns del $DPDK_NS'"
	DPDK_NS='' DPDK_IF=''
}

dpdk_workers() {
	local cpus
	cpus=$(nproc)
	((WORKERS < cpus)) && echo "$WORKERS" || echo $((cpus > 1 ? cpus - 1 : 1))
}

# With VR_DELIVER (lib.sh) the relay delivers, as kernel mode's vmrelay
# does, to a relay smtp-sink of its own; that sink runs in the relay's
# namespace, on its loopback, since the delivery threads' kernel sockets
# have no other address there (the DPDK port has none for the kernel).
# lib.sh's settle and verify read $dir/relay-sink.out alike for both.
dpdk_relay_sink() {
	local dir=$1 maxconn=$((SESSIONS + 16 > 256 ? SESSIONS + 16 : 256)) i
	ip netns exec "$DPDK_NS" smtp-sink -u nobody -c -m "$maxconn" \
		"127.0.0.1:$DPDK_RELAY_PORT" "$maxconn" >"$dir/relay-sink.out" 2>&1 &
	VR_RELAY_PID=$!
	CHILDREN+=("$VR_RELAY_PID")
	for ((i = 0; i < 150; i++)); do
		[[ -n $(ip netns exec "$DPDK_NS" ss -Hltn "sport = :$DPDK_RELAY_PORT" 2>/dev/null) ]] &&
			return 0
		kill -0 "$VR_RELAY_PID" 2>/dev/null || break
		sleep 0.1
	done
	die "vmrelay-dpdk: its relay smtp-sink did not start in $DPDK_NS: $(tail -n 3 "$dir/relay-sink.out")"
}

# The load aims at the DPDK relay while it runs: SERVER_ADDR and
# CLIENT_ADDR are the kernel engines' otherwise.
start_dpdk() {
	local dir=$1 workers vdev i smarthost=127.0.0.1:1
	dpdk_link_up
	VR_RELAY_PID=
	if [[ -n ${VR_DELIVER:-} ]]; then
		dpdk_relay_sink "$dir"
		smarthost=127.0.0.1:$DPDK_RELAY_PORT
	fi
	DPDK_SAVED_ADDRS=("$SERVER_ADDR" "$CLIENT_ADDR")
	SERVER_ADDR=$DPDK_ADDR CLIENT_ADDR=$DPDK_PEER_ADDR PORT=25
	workers=$(dpdk_workers)
	case $DPDK_PMD in
	af_packet)
		vdev=net_af_packet0,iface=$DPDK_IF
		((workers == 1)) || vdev+=,qpairs=$workers
		;;
	af_xdp) vdev=net_af_xdp0,iface=$DPDK_IF,start_queue=0,queue_count=$workers ;;
	esac
	vdev+=${DPDK_VDEV_ARGS:+,$DPDK_VDEV_ARGS}    # e.g. busy_budget=0 for net_af_xdp
	subst "$BENCH_DIR/vmrelay/relay-dpdk.ini.in" "$dir/relay.ini" DIR="$dir" PORT="$PORT" \
		WORKERS="$workers" MAX_CONN=$((SESSIONS + 16)) LCORES="-l 0-$workers" VDEV="$vdev" \
		ADDR="$DPDK_ADDR" SMARTHOST="$smarthost"
	if [[ -n ${VR_DELIVERY_WORKERS:-} ]]; then
		sed -i "/^\[delivery\]\$/a workers = $VR_DELIVERY_WORKERS" "$dir/relay.ini"
		grep -A 1 '^\[delivery\]$' "$dir/relay.ini" | grep -q "^workers = $VR_DELIVERY_WORKERS\$" ||
			die "bench/vmrelay/relay-dpdk.ini.in changed: cannot set [delivery] workers"
	fi
	cp "$BENCH_DIR/vmrelay/accounts.jsonl.in" "$dir/accounts.jsonl"
	sed -i -E "s|(\"id\":\"bench\",\"ips\":\[)|\1\"$CLIENT_ADDR\",|" "$dir/accounts.jsonl"
	grep -q "\"ips\":\[\"$CLIENT_ADDR\"," "$dir/accounts.jsonl" ||
		die "bench/vmrelay/accounts.jsonl.in changed: cannot add $CLIENT_ADDR to the bench account's ips"
	# libbpf and libxdp say how they attached the XDP program on stderr, in
	# lines of their own (a section they skip, no bpffs in the namespace):
	# kept in xdp-libs.log, not in the relay's log that lib.sh checks.
	: >"$dir/vmrelay.log"
	ip netns exec "$DPDK_NS" "$VMRELAY" -c "$dir/relay.ini" > >(sed -u -E \
		-e "/^lib(bpf|xdp): /{w $dir/xdp-libs.log" -e 'd}' >>"$dir/vmrelay.log") 2>&1 &
	VR_PID=$!
	CHILDREN+=("$VR_PID")
	# Up once every worker runs its loop (there is no kernel socket to see).
	for ((i = 0; i < 150; i++)); do
		(($(grep -c 'event=worker_start ' "$dir/vmrelay.log") == workers)) && break
		kill -0 "$VR_PID" 2>/dev/null || break
		sleep 0.1
	done
	if ! kill -0 "$VR_PID" 2>/dev/null || ((i == 150)); then
		stop_child "$VR_PID" || true
		forget_child "$VR_PID"
		die "vmrelay on DPDK ($VMRELAY) did not come up on $DPDK_IF; its log:"$'\n'"$(tail_of "$dir/vmrelay.log" 10)"
	fi
	TREE=("$VR_PID")
}

settle_dpdk() { :; }
verify_dpdk() { verify_vmrelay "$@"; }

stop_dpdk() {
	stop_vmrelay "$1"
	SERVER_ADDR=${DPDK_SAVED_ADDRS[0]} CLIENT_ADDR=${DPDK_SAVED_ADDRS[1]}
}
