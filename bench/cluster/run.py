"""Cluster benchmark (issue 8): what sharing quotas through Redis costs.

    /usr/bin/python3 bench/cluster/run.py [--build DIR] [--duration S] [--sessions N] [--rounds R]
                                          [--busy-rate R] [--busy-duration S]
                                          [--lease-ttl S] [--skip-throughput]
    (--busy-duration 0 skips the second part; results: bench/cluster/RESULTS.md)

One run, one Redis (redis-server on a free loopback port), six vmrelay
nodes over kernel sockets, one worker each, spools on /var/tmp:

  1. throughput: vmrelay-bench drives three clustered nodes (127.0.0.2-4)
     and the same three nodes' configuration without [cluster]
     (127.0.0.5-7), all three of a trio at once for --duration seconds, from
     the quota-unlimited account "bench" (as bench/compare.sh); --rounds
     rounds, the trios taking turns (the first trio alternating), so machine
     noise falls on both; prints each trio's median sum of msgs/s and the
     ratio (target >= 95 %). An unlimited account takes no lease, so this is
     what the cluster's presence costs the path.
  2. Redis operations per accepted mail for a busy VPS with limits: account
     "busy" (127.0.0.8; 255 a minute cluster-wide, the local maximum) sends
     --busy-rate mails/s (default 1.5: 35 % of its minute limit) round-robin
     through the three clustered nodes for --busy-duration seconds (default
     600); Redis's script calls (INFO commandstats: evalsha) before and
     after, the blocks' return included (the run waits until Redis holds
     no lease of the VPS), per accepted mail (target <= 0.05), and any
     refusal. A steady node calls once per lease life: the renewal near
     the end of [cluster] lease_ttl_s (--lease-ttl; default: the config's,
     60) also tops its block up to 1.25 x its rate x lease_ttl_s; the block
     is cut to a third of the windows' headroom near a limit. So the figure
     is about 1 / (lease_ttl_s x mails/s per node), plus each node's first
     calls while it learns the rate and its return call at the end.

Accepted mail must not leave the machine: [delivery] smarthost is a closed
local port, so each message is tried once and deferred (as compare.sh).
Every process started here is stopped at exit.
"""

import argparse
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTERED = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
PLAIN = ["127.0.0.5", "127.0.0.6", "127.0.0.7"]
BUSY = "127.0.0.8"

ACCOUNTS = [
    {"id": "bench", "ips": ["127.0.0.1"], "hostname": "bench.example",
     "domains": ["bench.example"], "unlimited": True},
    {"id": "busy", "ips": [BUSY], "hostname": "busy.example", "domains": ["busy.example"],
     "daily_quota": 10000},
]

procs = []


def free_port(host="127.0.0.1"):
    s = socket.socket()
    s.bind((host, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(host, port, what, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("cluster bench: %s did not come up on %s:%d" % (what, host, port))


def start_redis(work):
    port = free_port()
    procs.append(subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", work, "--logfile", os.path.join(work, "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait_port("127.0.0.1", port, "redis-server")
    return port


def redis_leases(port, vps):
    out = subprocess.run(["redis-cli", "-p", str(port), "HLEN", "vmrelay:{%s}:l" % vps],
                         capture_output=True, text=True, check=True).stdout
    return int(out.strip() or 0)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def redis_evalsha_calls(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO", "commandstats"],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("cmdstat_evalsha:"):
            return int(line.split("calls=")[1].split(",")[0])
    return 0


def start_node(build, work, name, addr, redis_port, ttl):
    d = os.path.join(work, name)
    os.makedirs(d)
    port = free_port(addr)
    with open(os.path.join(d, "accounts.jsonl"), "w") as f:
        f.write("".join(json.dumps(a) + "\n" for a in ACCOUNTS))
    lines = ["[relay]", "hostname = %s.bench.invalid" % name,
             "listen = %s:%d" % (addr, port), "spool_dir = " + os.path.join(d, "spool"),
             "accounts = " + os.path.join(d, "accounts.jsonl"), "",
             "[io]", "mode = kernel", "workers = 1", "",
             "[smtp]", "max_conn_per_ip = 10000", "",
             "[limits]", "per_minute = 255", "per_hour = 100000", "per_day = 10000", "",
             "[delivery]", "smarthost = 127.0.0.1:1", ""]
    if redis_port:
        lines += ["[cluster]", "redis = 127.0.0.1:%d" % redis_port, "node = " + name]
        lines += ["lease_ttl_s = %d" % ttl] if ttl else []
        lines += [""]
    with open(os.path.join(d, "relay.ini"), "w") as f:
        f.write("\n".join(lines))
    log = open(os.path.join(d, "vmrelay.log"), "wb")
    procs.append(subprocess.Popen([os.path.join(build, "dpdk-app", "vmrelay"), "-c",
                                   os.path.join(d, "relay.ini"), "--io", "kernel"],
                                  stdout=log, stderr=log))
    wait_port(addr, port, "vmrelay " + name)
    return port


def load(bench, targets, duration, sessions):
    """vmrelay-bench against every target at once: summed msgs/s."""
    runs = [subprocess.Popen([bench, "--target", "%s:%d" % t, "--sessions", str(sessions),
                              "--duration", str(duration), "--reuse", "--size", "6000",
                              "--from", "bench@bench.example", "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for t in targets]
    total = 0.0
    for r in runs:
        out, err = r.communicate(timeout=duration + 120)
        rep = json.loads(out)
        if r.returncode != 0 or rep["messages"]["failed"]:
            sys.exit("cluster bench: load failed (%d): %s %s" % (r.returncode, err, out))
        total += rep["msgs_per_s"]
    return total


def busy(targets, rate, duration):
    """Paced mail from the busy VPS round-robin over targets: (accepted,
    refused) after sessions of ten messages each."""
    accepted, refused = [0], []
    lock = threading.Lock()
    t0 = time.monotonic()
    n = int(rate * duration)

    def one(k):
        host, port = targets[k % len(targets)]
        s = smtplib.SMTP(host, port, source_address=(BUSY, 0), timeout=30)
        try:
            s.ehlo("busy.example")
            s.mail("app@busy.example")
            code, text = s.rcpt("sink@sink.example")
            if code == 250:
                code, text = s.data(b"From: <app@busy.example>\r\nSubject: busy\r\n\r\nhi\r\n")
            with lock:
                if code == 250:
                    accepted[0] += 1
                else:
                    refused.append("%d %s" % (code, text.decode()))
        finally:
            s.quit()

    threads = []
    for k in range(n):
        time.sleep(max(0, t0 + k / rate - time.monotonic()))
        t = threading.Thread(target=one, args=(k,))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    return accepted[0], refused


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--duration", type=int, default=20)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--busy-rate", type=float, default=1.5)
    ap.add_argument("--busy-duration", type=int, default=600)
    ap.add_argument("--lease-ttl", type=int, default=0, help="default: the config's")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    bench = os.path.join(build, "bench", "vmrelay-bench", "vmrelay-bench")
    work = tempfile.mkdtemp(prefix="vr-bench-cluster-", dir="/var/tmp")
    print("load average at start: " + loadavg())
    try:
        redis = start_redis(work)
        clustered = [(a, start_node(build, work, "c%d" % i, a, redis, args.lease_ttl))
                     for i, a in enumerate(CLUSTERED)]
        if not args.skip_throughput:
            plain = [(a, start_node(build, work, "p%d" % i, a, None, 0))
                     for i, a in enumerate(PLAIN)]
            load(bench, clustered + plain, 3, 2)               # warm-up
            runs = {"clustered": [], "unclustered": []}
            for k in range(args.rounds):
                turn = [("clustered", clustered), ("unclustered", plain)]
                for name, trio in (turn if k % 2 == 0 else turn[::-1]):
                    runs[name].append(load(bench, trio, args.duration, args.sessions))
            with_cluster = sorted(runs["clustered"])[len(runs["clustered"]) // 2]
            without = sorted(runs["unclustered"])[len(runs["unclustered"]) // 2]
            print("throughput, unlimited account, 3 nodes x 1 worker, %d rounds of %d s, "
                  "%d sessions each:" % (args.rounds, args.duration, args.sessions))
            print("  clustered   %8.0f msgs/s  (median of %s)"
                  % (with_cluster, ", ".join("%.0f" % v for v in runs["clustered"])))
            print("  unclustered %8.0f msgs/s  (median of %s)"
                  % (without, ", ".join("%.0f" % v for v in runs["unclustered"])))
            print("  ratio       %8.1f %%  (target >= 95 %%)"
                  % (100.0 * with_cluster / without))

        if args.busy_duration == 0:
            return
        before = redis_evalsha_calls(redis)
        ok, refused = busy(clustered, args.busy_rate, args.busy_duration)
        print("load average after the busy VPS: " + loadavg())
        # blocks age out and are settled: counted too
        deadline = time.monotonic() + 120
        while redis_leases(redis, "busy") and time.monotonic() < deadline:
            time.sleep(1)
        ops = redis_evalsha_calls(redis) - before
        print("busy VPS, %.1f mails/s for %d s through the 3 clustered nodes "
              "(lease_ttl_s %s):" % (args.busy_rate, args.busy_duration,
                                     args.lease_ttl or "default"))
        print("  accepted %d, refused %d%s" % (ok, len(refused),
                                              (": " + refused[0]) if refused else ""))
        print("  Redis script calls %d: %.4f per accepted mail  (target <= 0.05)"
              % (ops, ops / ok if ok else float("nan")))
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
