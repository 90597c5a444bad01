#!/usr/bin/python3
"""dkimcheck.py - what bench/e2e.sh's far sink got, checked for signatures.

  dkimcheck.py DIR --expect N --pubkey B64 --domain D --selector S [--sample K]

DIR holds smtp-sink -D files (read in name order): each transaction is the sink's X-Client-Addr,
X-Client-Proto, X-Helo-Args, X-Mail-Args and X-Rcpt-Args lines, then the
message as received with the sink's own Received line on top, in LF line
ends. Counts the messages and those whose first DKIM-Signature says
a=ed25519-sha256, d=D, s=S; then verifies K of them, spread evenly over the
file, with dkimpy against the public key B64 (the DNS answer is served from
here, no resolver involved). Prints "messages=N signed=N verified=K/K" and
exits 1, saying why, unless every message arrived, signed, and every sample
verifies.
"""

import argparse
import os
import re
import sys

import dkim

SPLIT = re.compile(rb"^X-Client-Addr: ", re.M)
SINK_LINES = re.compile(rb"\A(?:X-[A-Za-z-]+: [^\n]*\n)*?X-Rcpt-Args: [^\n]*\n(?:X-Rcpt-Args: [^\n]*\n)*")
SIG = re.compile(rb"^DKIM-Signature:[^\n]*(?:\n[ \t][^\n]*)*", re.M | re.I)


def tag(sig, name):
    m = re.search(rb"(?:^|;)\s*" + name + rb"\s*=\s*([^;]*)", re.sub(rb"\s+", b" ", sig))
    return m.group(1).strip() if m else b""


def message_of(chunk):
    """The message as the sink got it, CRLF line ends, without the sink's
    transaction lines and its own Received line (added after signing)."""
    body = SINK_LINES.sub(b"", b"X-Client-Addr: " + chunk, count=1)
    if body.startswith(b"Received: from ") and b"by smtp-sink" in body[:200]:
        end = re.search(rb"\n(?![ \t])", body)
        body = body[end.end():]
    return body.replace(b"\n", b"\r\n")


def main():
    ap = argparse.ArgumentParser(prog="dkimcheck.py")
    ap.add_argument("dir")
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--pubkey", required=True)
    ap.add_argument("--domain", required=True)
    ap.add_argument("--selector", required=True)
    ap.add_argument("--sample", type=int, default=20)
    args = ap.parse_args()
    chunks = []
    for name in sorted(os.listdir(args.dir)):
        with open(os.path.join(args.dir, name), "rb") as f:
            chunks += SPLIT.split(f.read())[1:]
    signed = []
    for i, chunk in enumerate(chunks):
        m = SIG.search(chunk)
        if (m and tag(m.group(0), b"a") == b"ed25519-sha256"
                and tag(m.group(0), b"d") == args.domain.encode()
                and tag(m.group(0), b"s") == args.selector.encode()):
            signed.append(i)
    record = ("v=DKIM1; k=ed25519; p=" + args.pubkey).encode()
    name = f"{args.selector}._domainkey.{args.domain}.".encode()

    def dns(qname, timeout=5):
        return record if qname == name else None

    sample = sorted({signed[j * len(signed) // args.sample] for j in range(args.sample)}) \
        if signed and args.sample else []
    bad = [i for i in sample if not dkim.verify(message_of(chunks[i]), dnsfunc=dns)]
    print(f"messages={len(chunks)} signed={len(signed)} verified={len(sample) - len(bad)}/{len(sample)}")
    if len(chunks) != args.expect or len(signed) != args.expect:
        sys.exit(f"dkimcheck.py: {args.dir}: {len(chunks)} messages, {len(signed)} signed "
                 f"(a=ed25519-sha256 d={args.domain} s={args.selector}), expected {args.expect}")
    if bad:
        sys.exit(f"dkimcheck.py: {args.dir}: message {bad[0] + 1} of {len(chunks)} fails "
                 f"DKIM verification:\n{message_of(chunks[bad[0]])[:800].decode(errors='replace')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
