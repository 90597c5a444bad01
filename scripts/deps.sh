#!/usr/bin/env bash
# Installs every Debian 12 package vmrelay needs to build, test, demo and
# benchmark. Idempotent: does nothing when all of them are present.
set -euo pipefail

packages=(
	# build
	build-essential meson ninja-build pkg-config clang
	libdpdk-dev liburcu-dev libinih-dev libjansson-dev libjemalloc-dev
	libssl-dev libsodium-dev libunbound-dev libhiredis-dev libcmocka-dev libclang-rt-14-dev
	# libunbound.pc names these as private requirements, and meson asks
	libevent-dev nettle-dev
	# test peers and tools
	swaks postfix python3-aiosmtpd python3-dkim openssl iproute2 procps
	util-linux psmisc
	# the demo turns off transmit checksum offload on the VPS's veth (the
	# kernel would leave TCP checksums for a NIC to fill in)
	ethtool
	# ... and pings the relay's DPDK address (our stack answers ARP and ICMP echo)
	iputils-ping
	# swaks speaks TLS (STARTTLS, --tls-on-connect) only with Net::SSLeay,
	# which its package merely recommends
	libnet-ssleay-perl
	# ... and IPv6 (swaks -6, tests/e2e/test_dpdk.py's AfPacketIPv6) only with
	# IO::Socket::INET6
	libio-socket-inet6-perl
	# vmrelay-bench's cheap body hash (XXH3) and its independent check in
	# tests/e2e/test_bench.py; gnuplot draws bench/scale.sh's curves
	libxxhash-dev python3-xxhash gnuplot-nox
	# tests/e2e/test_ctl.py parses the metrics with Prometheus's own parser
	python3-prometheus-client
	# delivery (issue 5): a real DNS server for the resolver's tests (unbound
	# as a local resolver, nsd serving a zone signed with ldns-signzone for
	# DNSSEC and DANE), dig to look at it, and DKIM checkers besides dkimpy
	unbound nsd ldnsutils bind9-dnsutils opendkim opendkim-tools
	# cluster quotas (issue 8): Redis, and Sentinel for test_cluster_sentinel.py
	redis-server redis-sentinel
	# userspace TCP (issue 3): scapy crafts SYN floods and blind RSTs;
	# dpdk-dev ships dpdk-testpmd, the forwarding ceiling in bench/
	python3-scapy dpdk dpdk-dev
	# bench/memif.sh reads the load generator's CPU time with /usr/bin/time
	time
)

missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]} (run as root to install)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
# Postfix is only a test peer and benchmark subject: no system mail setup.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
