#!/usr/bin/python3
"""Verifies every DKIM signature of DIR/*.eml with two independent verifiers.

Usage: verify.py DIR

DIR/dns.txt holds the public keys, one "NAME TXT-TEXT" a line
(ed1._domainkey.example.com v=DKIM1; k=ed25519; p=...). Each message must
carry at least one DKIM-Signature and every one of them must pass:
  - dkimpy (python3-dkim), with dns.txt as its DNS (dnsfunc);
  - opendkim's own verifier: `opendkim -t FILE` with TestDNSData pointing at
    dns.txt, reading its Authentication-Results (one dkim= per signature).
Prints one line per failure and exits 1 if there was any, 0 otherwise.
Run by tests/unit/test_dkim.c; needs /usr/bin/python3 (python3-dkim).
"""
import glob
import os
import re
import subprocess
import sys

import dkim


def load_dns(path):
    records = {}
    with open(path) as f:
        for line in f:
            name, _, text = line.rstrip("\n").partition(" ")
            records[name + "."] = text.encode()
    return records


def count_signatures(msg):
    head = msg.split(b"\r\n\r\n", 1)[0]
    return len(re.findall(rb"(?im)^dkim-signature\s*:", head))


def check_dkimpy(msg, records):
    def dnsfunc(name, timeout=5):
        return records.get(name.decode() if isinstance(name, bytes) else name)

    d = dkim.DKIM(msg)
    results = []
    for i in range(count_signatures(msg)):
        try:
            ok = d.verify(idx=i, dnsfunc=dnsfunc)
        except dkim.DKIMException as e:
            ok = False
            results.append("signature %d: %s" % (i, e))
            continue
        if not ok:
            results.append("signature %d failed" % i)
    return results


def check_opendkim(path, conf, n):
    out = subprocess.run(["opendkim", "-vv", "-x", conf, "-t", path],
                         capture_output=True, text=True, timeout=60)
    verdicts = re.findall(r"\bdkim=(\w+)", out.stdout)
    if len(verdicts) != n or any(v != "pass" for v in verdicts):
        return ["opendkim: %d signatures, verdicts %s: %s" % (n, verdicts, out.stdout.strip())]
    return []


def main():
    top = sys.argv[1]
    records = load_dns(os.path.join(top, "dns.txt"))
    conf = os.path.join(top, "opendkim.conf")
    with open(conf, "w") as f:
        f.write("TestDNSData file:%s\nSyslog no\nMode v\nAlwaysAddARHeader yes\n"
                % os.path.join(top, "dns.txt"))
    failures = 0
    files = sorted(glob.glob(os.path.join(top, "*.eml")))
    for path in files:
        with open(path, "rb") as f:
            msg = f.read()
        n = count_signatures(msg)
        problems = ["no DKIM-Signature"] if n == 0 else []
        problems += check_dkimpy(msg, records) + check_opendkim(path, conf, n)
        for p in problems:
            print("%s: %s" % (os.path.basename(path), p))
        failures += bool(problems)
    print("verify.py: %d messages, %d failed" % (len(files), failures))
    return 1 if failures or not files else 0


if __name__ == "__main__":
    sys.exit(main())
