#!/usr/bin/env bash
# A guided run of vmrelay on loopback (Debian 12, as root): builds it if
# needed, makes a test certificate, a config and an accounts file in a temp
# directory (127.0.0.1 is the VPS "vps1", example.com), starts
# `vmrelay --io kernel`, sends mail with swaks (plain, then STARTTLS + AUTH
# with the VPS's token), shows the SMTP dialogue, the relay's log and the
# queued message, shows an unregistered client (127.0.0.2) and a foreign
# sender domain being refused,
# stops the relay and removes everything.
set -euo pipefail

. "$(dirname "$0")/lib.sh"
cd "$ROOT"

say "dependencies and build"
bash scripts/deps.sh
ensure_build build --buildtype=debugoptimized
VMRELAY=$ROOT/build/dpdk-app/vmrelay
SPOOL=$ROOT/build/engine/spool/vmrelay-spool

work=$(mktemp -d /tmp/vmrelay-demo.XXXXXX)
relay_pid=
cleanup() {
	if [ -n "$relay_pid" ] && kill -0 "$relay_pid" 2>/dev/null; then
		kill -TERM "$relay_pid"
		wait "$relay_pid" || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

say "setup in $work"
scripts/gen-test-cert.sh relay.demo.test "$work/tls.crt" "$work/tls.key" \
	relay.demo.test 127.0.0.1 >/dev/null
token=$(openssl rand -hex 16)
token_sha=$(printf '%s' "$token" | sha256sum | cut -d' ' -f1)
cat >"$work/accounts.jsonl" <<EOF
{"id":"vps1","ips":["127.0.0.1"],"hostname":"vps1.example.com","domains":["example.com"],"auth_sha256":"$token_sha"}
EOF
cat >"$work/relay.ini" <<EOF
[relay]
hostname = relay.demo.test
; port 0: any free port; the start line says which
listen = 127.0.0.1:0, 127.0.0.1:0 tls=implicit
spool_dir = $work/spool
accounts = $work/accounts.jsonl

[io]
mode = kernel
workers = 2

[tls]
cert = $work/tls.crt
key = $work/tls.key
EOF
sed 's/^/    /' "$work/relay.ini"
echo "    accounts: $(cat "$work/accounts.jsonl")"
echo "    vps1's AUTH token: $token (the relay only keeps its SHA-256)"

say "starting: vmrelay -c relay.ini --io kernel"
"$VMRELAY" -c "$work/relay.ini" --io kernel 2>"$work/relay.log" &
relay_pid=$!
for _ in $(seq 100); do
	grep -q 'event=start ' "$work/relay.log" && break
	kill -0 "$relay_pid" 2>/dev/null || { cat "$work/relay.log"; exit 1; }
	sleep 0.05
done
start=$(grep 'event=start ' "$work/relay.log")
echo "    $start"
listen=$(sed -E 's/.*listen="([^"]*)".*/\1/' <<<"$start")
port=$(cut -d, -f1 <<<"$listen" | sed -E 's/.*:([0-9]+)$/\1/')
echo "    SMTP on 127.0.0.1:$port (STARTTLS offered); implicit TLS on $(cut -d, -f2 <<<"$listen")"

swaks_demo() {
	swaks --server 127.0.0.1 --port "$port" --ehlo vps1.example.com \
		--from "$1" --to someone@example.net \
		--header "Subject: $2" --body "Sent by scripts/demo.sh: $2." "${@:3}" |
		sed 's/^/    /'
}

say "1. plain SMTP from vps1 (registered by its address 127.0.0.1)"
swaks_demo cron@example.com "plain SMTP"

say "2. STARTTLS + AUTH PLAIN with vps1's token (what a VPS without a registered address does)"
swaks_demo web@example.com "STARTTLS and AUTH" --tls --auth PLAIN \
	--auth-user vps1 --auth-password "$token"

say "3. an unregistered client (127.0.0.2) is refused: never an open relay"
swaks_demo spam@example.com "relay attempt" --local-interface 127.0.0.2 || true

say "4. vps1 may send only as its own domains: a foreign sender domain is refused"
swaks_demo newsletter@bank.example "foreign sender" || true

say "the relay's log"
sed 's/^/    /' "$work/relay.log"

say "the queue: vmrelay-spool $work/spool"
"$SPOOL" "$work/spool" | sed 's/^/    /'
qid=$("$SPOOL" --json "$work/spool" | head -1 | sed -E 's/.*"qid":"([^"]*)".*/\1/')
say "one queued message, as it will be delivered: vmrelay-spool DIR show $qid"
"$SPOOL" "$work/spool" show "$qid" | sed 's/^/    /'

say "stopping (SIGTERM)"
kill -TERM "$relay_pid"
wait "$relay_pid"
relay_pid=
tail -2 "$work/relay.log" | sed 's/^/    /'

cat <<EOF

Outbound delivery (to the recipients' MX servers, or to a local receiver in
this demo) arrives with the delivery issue: for now the relay accepts,
checks and durably queues mail, and vmrelay-spool shows the queue. A later
issue moves this demo to the DPDK transport in a network namespace.
EOF
