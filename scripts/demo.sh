#!/usr/bin/env bash
# A guided run of vmrelay end to end (Debian 12, as root): a "VPS" in a
# network namespace sends mail through vmrelay running on DPDK (our own
# TCP/IP stack on net_af_packet, no hugepages, no NIC) to a local receiver.
#
#   namespace vmrdemo-vps              namespace vmrdemo-relay
#   10.77.0.2 (vps1), 10.77.0.3   veth   vmrelay --io dpdk on vr-relay (10.77.0.1)
#   swaks -> 10.77.0.1:25       <------>  spool -> delivery -> 127.0.0.1:2526
#                                          (an aiosmtpd receiver in that namespace)
#
# It builds vmrelay if needed, makes a test certificate, an Ed25519 DKIM key,
# a config and an accounts file in a temp directory, and shows: plain SMTP,
# STARTTLS + AUTH, an unregistered client and a foreign sender refused, the
# mail arriving DKIM-signed (verified with dkimpy against the key record the
# relay's DNS wizard prints), and the operator's view through vmrelayctl. It
# removes the namespaces and the directory however it ends.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
cd "$ROOT"

say "dependencies and build"
bash scripts/deps.sh
ensure_build build --buildtype=debugoptimized
VMRELAY=$ROOT/build/dpdk-app/vmrelay
CTL=$ROOT/build/engine/ctl/vmrelayctl

NS_VPS=vmrdemo-vps
NS_RELAY=vmrdemo-relay
work=$(mktemp -d /tmp/vmrelay-demo.XXXXXX)
relay_pid=
receiver_pid=
cleanup() {
	if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
		kill -TERM "$relay_pid"
		wait "$relay_pid" || true
	fi
	[ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null
	ip netns del "$NS_VPS" 2>/dev/null || true
	ip netns del "$NS_RELAY" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
in_vps() { ip netns exec "$NS_VPS" "$@"; }
in_relay() { ip netns exec "$NS_RELAY" "$@"; }

say "network: two namespaces and a veth pair between them"
ip netns del "$NS_VPS" 2>/dev/null || true
ip netns del "$NS_RELAY" 2>/dev/null || true
ip netns add "$NS_VPS"
ip netns add "$NS_RELAY"
ip link add vr-vps netns "$NS_VPS" type veth peer name vr-relay netns "$NS_RELAY"
in_vps ip addr add 10.77.0.2/24 dev vr-vps
in_vps ip addr add 10.77.0.3/24 dev vr-vps
in_vps ip link set vr-vps up
in_vps ip link set lo up
# Over a veth the kernel leaves TCP checksums for a NIC to fill in; the
# relay's stack reads frames as they are, so the VPS must fill them in.
in_vps ethtool -K vr-vps tx off >/dev/null
# The relay's end carries no kernel address: DPDK's af_packet port owns it.
in_relay sysctl -qw net.ipv6.conf.all.disable_ipv6=1
in_relay ip link set vr-relay up
in_relay ip link set lo up
echo "    $NS_VPS: vr-vps 10.77.0.2/24 (vps1) and 10.77.0.3/24 (not registered)"
echo "    $NS_RELAY: vr-relay, driven by vmrelay's DPDK port as 10.77.0.1"

say "setup in $work"
scripts/gen-test-cert.sh relay.demo.test "$work/tls.crt" "$work/tls.key" \
	relay.demo.test 10.77.0.1 >/dev/null
openssl genpkey -algorithm ed25519 -out "$work/ed1.pem" 2>/dev/null
openssl rand -hex 32 >"$work/dns.secret"
chmod 600 "$work/dns.secret"
token=$(openssl rand -hex 16)
token_sha=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/accounts.jsonl" <<EOF
{"id":"vps1","ips":["10.77.0.2"],"hostname":"vps1.example.com","domains":["example.com"],"auth_sha256":"$token_sha","dkim":{"example.com":[{"selector":"ed1","algorithm":"ed25519-sha256","key":"$work/ed1.pem"}]}}
EOF
cat >"$work/relay.ini" <<EOF
[relay]
hostname = relay.demo.test
listen = 0.0.0.0:25, 0.0.0.0:465 tls=implicit
spool_dir = $work/spool
accounts = $work/accounts.jsonl
control_socket = $work/ctl.sock

[io]
mode = dpdk
workers = 1

[dpdk]
; lcore 0 runs the main thread, lcore 1 the poll-mode worker
eal = -l 0-1 --no-huge -m 512 --no-pci --no-shconf --file-prefix=vrdemo --vdev=net_af_packet0,iface=vr-relay
ip = 10.77.0.1/24

[delivery]
; every message to one next hop: the demo's receiver
smarthost = 127.0.0.1:2526
; nothing answers DNS in the relay's namespace: fail fast
resolver = 127.0.0.1
dns_timeout_ms = 1000

[dns]
spf_name = _spf.relay.demo.test
key_zone = _dkim.relay.demo.test
secret_file = $work/dns.secret

[tls]
cert = $work/tls.crt
key = $work/tls.key
EOF
sed 's/^/    /' "$work/relay.ini"
echo "    accounts: $(cat "$work/accounts.jsonl")"
echo "    vps1's AUTH token: $token (the relay only keeps its SHA-256)"

say "the receiver: aiosmtpd on 127.0.0.1:2526 in $NS_RELAY, one file per message"
mkdir "$work/inbox"
cat >"$work/receiver.py" <<'EOF'
import os, sys, time
from aiosmtpd.controller import Controller

class Save:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        Save.n += 1
        path = os.path.join(sys.argv[1], "%02d.eml" % Save.n)
        with open(path + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        os.rename(path + ".tmp", path)
        return "250 2.0.0 saved"

Controller(Save(), hostname="127.0.0.1", port=2526).start()
while True:
    time.sleep(3600)
EOF
# Started directly, not through in_relay: $! must be the process itself.
ip netns exec "$NS_RELAY" "$PY" "$work/receiver.py" "$work/inbox" 2>"$work/receiver.log" &
receiver_pid=$!

say "starting: vmrelay -c relay.ini (io = dpdk) in $NS_RELAY"
ip netns exec "$NS_RELAY" "$VMRELAY" -c "$work/relay.ini" 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 300); do
	grep -q 'event=start ' "$work/relay.log" && break
	kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
	sleep 0.05
done
grep -q 'event=start ' "$work/relay.log" || { cat "$work/relay.log"; exit 1; }
grep 'event=start ' "$work/relay.log" | sed 's/^/    /'
in_vps ping -c 2 -W 2 10.77.0.1 | sed 's/^/    /'

swaks_demo() {
	in_vps swaks --server 10.77.0.1 --port 25 --ehlo vps1.example.com \
		--from "$1" --to someone@example.net \
		--header "Subject: $2" --body "Sent by scripts/demo.sh: $2." "${@:3}" |
		sed 's/^/    /'
}

say "1. plain SMTP from vps1 (registered by its address 10.77.0.2)"
swaks_demo cron@example.com "plain SMTP" --local-interface 10.77.0.2

say "2. STARTTLS + AUTH PLAIN with vps1's token, from an address the relay does not know"
swaks_demo web@example.com "STARTTLS and AUTH" --local-interface 10.77.0.3 --tls \
	--auth PLAIN --auth-user vps1 --auth-password "$token"

say "3. the same unregistered address without AUTH is refused: never an open relay"
swaks_demo spam@example.com "relay attempt" --local-interface 10.77.0.3 || true

say "4. vps1 may send only as its own domains: a foreign sender domain is refused"
swaks_demo newsletter@bank.example "foreign sender" --local-interface 10.77.0.2 || true

say "the receiver got the two accepted messages, DKIM-signed by the relay"
for _ in $(seq 200); do
	[ "$(ls "$work/inbox" | grep -c '\.eml$')" -ge 2 ] && break
	sleep 0.05
done
[ "$(ls "$work/inbox" | grep -c '\.eml$')" -ge 2 ] || {
	echo "    delivery did not happen; the relay's log:"; cat "$work/relay.log"; exit 1; }
msg=$(ls "$work/inbox"/*.eml | head -1)
sed -n '1,/^\r\?$/p' "$msg" | sed 's/^/    /'

say "the records example.com must publish: vmrelayctl dns-records example.com"
in_relay "$CTL" -s "$work/ctl.sock" --human dns-records example.com | sed 's/^/    /'
in_relay "$CTL" -s "$work/ctl.sock" dns-records example.com >"$work/records.json"

say "every delivered message verifies with dkimpy against the key record above"
"$PY" - "$work/records.json" "$work"/inbox/*.eml <<'EOF'
import json, re, sys
import dkim

recs = json.load(open(sys.argv[1]))
# operator_zone holds "<target> IN TXT ..." for each selector's CNAME target
txt = " ".join(re.findall(r'"([^"]*)"', recs["operator_zone"]))
for path in sys.argv[2:]:
    ok = dkim.verify(open(path, "rb").read(), dnsfunc=lambda name, timeout=5: txt.encode())
    print("    %s: %s" % (path.rsplit("/", 1)[1], "dkim=pass" if ok else "dkim=FAIL"))
    if not ok:
        sys.exit(1)
EOF

say "the operator's view: vmrelayctl quota show vps1, queue list, stats"
in_relay "$CTL" -s "$work/ctl.sock" --human quota show vps1 | sed 's/^/    /'
in_relay "$CTL" -s "$work/ctl.sock" --human queue list | sed 's/^/    /'
in_relay "$CTL" -s "$work/ctl.sock" --human stats | sed 's/^/    /'

say "the relay's log: one line per SMTP transaction and per delivery"
sed 's/^/    /' "$work/relay.log"

say "stopping (SIGTERM)"
kill -TERM "$relay_pid"
status=0
wait "$relay_pid" || status=$?
relay_pid=
tail -4 "$work/relay.log" | sed 's/^/    /'
[ "$status" -eq 0 ] || { echo "vmrelay exited with status $status"; exit 1; }
