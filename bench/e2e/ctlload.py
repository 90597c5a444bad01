#!/usr/bin/python3
"""ctlload.py - control commands against a running relay, for bench/e2e.sh's
vmrelay+ctl runs (issue 6: 1000 control commands during a load run).

  ctlload.py SOCKET --count N --rate R --account ID --ip ADDR

Sends N requests to the control socket at R a second, each on a connection
of its own as vmrelayctl does, cycling through stats, quota show, queue
list, metrics and vps show; every reply must say "ok": true. Stops early on
SIGTERM. Prints "sent=N ok=N seconds=S cpu_s=C" on exit (C: this process's
own user + system CPU seconds, which bench/e2e.sh reports apart from the
relay's), then a line with each command's mean and longest reply time in
ms; exits 1 on a failed reply.
"""

import argparse
import json
import os
import signal
import socket
import sys
import time

stop = False


def request(path, cmd, args):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        s.sendall(json.dumps({"cmd": cmd, "args": args}).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            got = s.recv(1 << 20)
            if not got:
                break
            buf += got
    return json.loads(buf)


def main():
    ap = argparse.ArgumentParser(prog="ctlload.py")
    ap.add_argument("socket")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, required=True)
    ap.add_argument("--account", required=True)
    ap.add_argument("--ip", required=True)
    args = ap.parse_args()
    cmds = [("stats", []), ("quota", ["show", args.account]), ("queue", ["list"]),
            ("metrics", []), ("vps", ["show", args.ip])]

    def on_term(signum, frame):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    sent = ok = 0
    took = {}   # command -> reply times, s

    def summary():
        cpu = os.times()
        print(f"sent={sent} ok={ok} seconds={time.monotonic() - t0:.3f} "
              f"cpu_s={cpu.user + cpu.system:.3f}")
        print(", ".join(f"{name} {1000 * sum(t) / len(t):.1f}/{1000 * max(t):.1f}"
                        for name, t in took.items()) + " ms mean/max")
    t0 = time.monotonic()
    while sent < args.count and not stop:
        # paced: request i leaves at t0 + i / rate, never in a burst
        delay = t0 + sent / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
            continue
        cmd, cargs = cmds[sent % len(cmds)]
        t = time.monotonic()
        reply = request(args.socket, cmd, cargs)
        took.setdefault(" ".join([cmd] + cargs[:1]), []).append(time.monotonic() - t)
        sent += 1
        if not reply.get("ok"):
            summary()
            sys.exit(f"ctlload.py: {cmd} {' '.join(cargs)}: {reply.get('error', reply)}")
        ok += 1
    summary()
    return 0


if __name__ == "__main__":
    sys.exit(main())
