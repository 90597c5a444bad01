# netns.sh - the veth path of bench/compare.sh --path veth (sourced by
# lib.sh, not run): a network namespace of our own holding the load
# generator, joined to the root namespace by a veth pair, so that every
# message crosses a real device pair (two stacks' worth of routing,
# neighbour lookup and softirq work) instead of loopback's short cut.
# The servers listen on NS_HOST_ADDR in the root namespace; the load runs
# in the namespace from NS_PEER_ADDR. Only what netns_up made is touched,
# and netns_down (called by cleanup() in lib.sh) removes it however the
# script ends.

# The first of 10.201.0.0/24 .. 10.201.63.0/24 that no address or route
# here uses (netns_up picks it): two benchmarks on the veth path at once,
# e.g. compare.sh and scale.sh run by two people, each get their own.
NS_NET=10.201.0.0/24
NS_HOST_ADDR=10.201.0.1
NS_PEER_ADDR=10.201.0.2
NS_NAME=''         # set once the namespace exists: netns_down removes it
NS_HOST_IF=''      # set once the pair exists

# netns_up: creates namespace vrb-PID and the pair vrbPIDh (root) /
# vrbPIDn (namespace), addresses them, brings them up and checks that the
# namespace reaches the root side. Dies, saying why, on any failure.
netns_up() {
	local ns=vrb-$$ host=vrb$$h peer=vrb$$n err
	command -v ip >/dev/null || die "--path veth: 'ip' not found (package iproute2)"
	# An address of ours already in use would send the load elsewhere, or
	# take it from whoever owns the address: take a subnet nobody uses.
	local n
	for ((n = 0; n < 64; n++)); do
		[[ -z $(ip -4 -o addr show to "10.201.$n.0/24") &&
			-z $(ip -4 route show to match "10.201.$n.1" | grep -v '^default') ]] && break
	done
	((n < 64)) || die "--path veth: 10.201.0.0/24 to 10.201.63.0/24 are all in use here"
	NS_NET=10.201.$n.0/24 NS_HOST_ADDR=10.201.$n.1 NS_PEER_ADDR=10.201.$n.2
	err=$(ip netns add "$ns" 2>&1) || die "--path veth: ip netns add $ns failed: $err"
	NS_NAME=$ns
	err=$(ip link add "$host" type veth peer name "$peer" netns "$ns" 2>&1) ||
		die "--path veth: creating the veth pair $host/$peer failed: $err"
	NS_HOST_IF=$host
	err=$( { ip addr add "$NS_HOST_ADDR/24" dev "$host" &&
		ip link set "$host" up &&
		ip -n "$ns" link set lo up &&
		ip -n "$ns" addr add "$NS_PEER_ADDR/24" dev "$peer" &&
		ip -n "$ns" link set "$peer" up; } 2>&1) ||
		die "--path veth: addressing the pair failed: $err"
	# Both ends report carrier a moment after they are set up: wait for
	# it rather than let the first session meet a link still down.
	local i
	for ((i = 0; i < 50; i++)); do
		[[ $(ip -o link show "$host") == *LOWER_UP* &&
			$(ip -n "$ns" -o link show "$peer") == *LOWER_UP* ]] && return 0
		sleep 0.1
	done
	die "--path veth: the pair $host/$peer did not come up"
}

# netns_down: removes the namespace (which takes its end of the pair, and
# so the pair) and, should the pair outlive it, the root end.
netns_down() {
	if [[ -n $NS_NAME ]]; then
		ip netns del "$NS_NAME" 2>/dev/null || say "could not remove namespace $NS_NAME: remove it with 'ip netns del $NS_NAME'"
		NS_NAME=
	fi
	if [[ -n $NS_HOST_IF ]]; then
		# deleting the namespace destroys the pair, asynchronously
		local i
		for ((i = 0; i < 20; i++)); do
			ip link show "$NS_HOST_IF" >/dev/null 2>&1 || break
			sleep 0.1
		done
		if ip link show "$NS_HOST_IF" >/dev/null 2>&1; then
			ip link del "$NS_HOST_IF" 2>/dev/null || say "could not remove $NS_HOST_IF: remove it with 'ip link del $NS_HOST_IF'"
		fi
		NS_HOST_IF=
	fi
	return 0
}
