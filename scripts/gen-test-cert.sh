#!/usr/bin/env bash
# Makes a self-signed certificate and its key for tests and the demo (never
# for production): a P-256 key, valid for 30 days, with the given common name
# and subjectAltNames (default: the common name). A SAN that parses as an IP
# address becomes IP:..., anything else DNS:...; "DNS:x" / "IP:x" pass as is.
#
#   scripts/gen-test-cert.sh CN CERT_OUT KEY_OUT [SAN ...]
#   scripts/gen-test-cert.sh relay.test /tmp/t/tls.crt /tmp/t/tls.key relay.test 127.0.0.1 ::1
set -euo pipefail

if [ $# -lt 3 ]; then
	echo "usage: $0 CN CERT_OUT KEY_OUT [SAN ...]" >&2
	exit 2
fi
cn=$1 cert=$2 key=$3
shift 3
[ $# -gt 0 ] || set -- "$cn"

san=
for name in "$@"; do
	case $name in
	DNS:* | IP:*) item=$name ;;
	*:*) item=IP:$name ;;   # IPv6
	*) if [[ $name =~ ^[0-9]+(\.[0-9]+){3}$ ]]; then item=IP:$name; else item=DNS:$name; fi ;;
	esac
	san=${san:+$san,}$item
done

# The key must not be readable by others even for a moment.
umask 077
# openssl req chats on stderr even when it works: show it only on failure.
if ! out=$(openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -sha256 \
	-days 30 -subj "/CN=$cn" -addext "subjectAltName=$san" \
	-keyout "$key" -out "$cert" 2>&1); then
	echo "$out" >&2
	exit 1
fi
chmod 644 "$cert"
echo "$cert (CN=$cn, $san)"
echo "$key"
