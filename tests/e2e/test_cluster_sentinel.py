"""Cluster-wide quotas through Redis Sentinel (issue 8): a master, its
replica and three redis-sentinel processes on loopback, started by the
test; three vmrelay nodes (kernel mode, 127.0.0.2-4) with `sentinels` and
`master_name` instead of a Redis address. Mid-run the sentinels fail the
master over (SENTINEL FAILOVER, once the replica has caught up); the nodes find the new master by asking the sentinels again
(after a READONLY reply or a lost connection), and the VPS's limit holds
across the switch.
"""

import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest

from test_cluster import (NODES, PREFIX, REDIS_CLI, REDIS_SERVER, Redis, free_port, send,
                          start_node, utc_day)

REDIS_SENTINEL = "/usr/bin/redis-sentinel"
MASTER = "e2emaster"


class Sentinel:
    """One redis-sentinel watching MASTER, its config in a directory of
    its own (a sentinel rewrites it)."""

    def __init__(self, master_port):
        self.dir = tempfile.mkdtemp(prefix="vr-e2e-sentinel-")
        self.port = free_port()
        conf = os.path.join(self.dir, "sentinel.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "port %d" % self.port, "bind 127.0.0.1", "dir " + self.dir,
                "logfile " + os.path.join(self.dir, "log"),
                "sentinel monitor %s 127.0.0.1 %d 2" % (MASTER, master_port),
                "sentinel down-after-milliseconds %s 1000" % MASTER,
                "sentinel failover-timeout %s 10000" % MASTER, ""]))
        self.proc = subprocess.Popen([REDIS_SENTINEL, conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def cli(self, *args):
        return subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port)] + list(args),
                              check=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()

    def master_port(self):
        try:
            out = self.cli("SENTINEL", "get-master-addr-by-name", MASTER).split("\n")
            return int(out[1]) if len(out) == 2 else None
        except subprocess.CalledProcessError:
            return None

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(what, pred, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


class SentinelTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        for exe in (REDIS_SERVER, REDIS_SENTINEL):
            if not os.access(exe, os.X_OK):
                raise unittest.SkipTest("no " + exe)

    def setUp(self):
        self.redis, self.sentinels, self.nodes = [], [], []
        master = Redis().start()
        self.redis.append(master)
        replica = Redis()
        replica.start()
        self.redis.append(replica)
        replica.cli("REPLICAOF", "127.0.0.1", str(master.port))
        wait_for("the replica's sync",
                 lambda: "master_link_status:up" in replica.cli("INFO", "replication"))
        self.sentinels = [Sentinel(master.port) for _ in range(3)]
        # every sentinel knows the replica and the two other sentinels
        wait_for("the sentinels", lambda: all(
            s.master_port() == master.port and
            "num-slaves\n1" in s.cli("SENTINEL", "master", MASTER) and
            "num-other-sentinels\n2" in s.cli("SENTINEL", "master", MASTER)
            for s in self.sentinels))

    def tearDown(self):
        for n in self.nodes:
            n.kill()
            n.cleanup()
        for s in self.sentinels:
            s.cleanup()
        for r in self.redis:
            r.cleanup()

    def by_port(self, port):
        return next(r for r in self.redis if r.port == port)

    def test_failover_mid_run(self):
        """20 an hour, sent round-robin over the nodes: 8 before the
        failover, the rest after; the nodes follow the new master, no more
        than 20 are ever accepted, the refusals after the 20th name the
        cluster-wide hourly limit, and the new master counts exactly 20."""
        where = ["sentinels = " + ", ".join("127.0.0.1:%d" % s.port for s in self.sentinels),
                 "master_name = " + MASTER]
        # fail-safe share 0: with no master reachable a node admits nothing.
        # Leases of 20 s: the nodes hold their blocks through the failover
        # without calling Redis (no write can fall between the promotion
        # and the demotion, which asynchronous replication would lose).
        self.nodes = [start_node(i, None, {"per_minute": 255, "per_hour": 20,
                                           "per_day": 1000},
                                 where=where, failsafe=0, lease_max=4, ttl=20)
                      for i in range(3)]
        for n in self.nodes:
            self.assertTrue(n.wait_log(r"event=cluster_redis_up redis=sentinels:" + MASTER,
                                       timeout=10), n.log())
        old = self.sentinels[0].master_port()
        accepted = 0
        for k in range(8):
            n, why = send(self.nodes[k % 3], k % 3)
            self.assertEqual(n, 1, why)
            accepted += n

        master, replica = self.by_port(old), self.redis[1]

        def offset(r):
            info = r.cli("INFO", "replication")
            key = "master_repl_offset:" if r is master else "slave_repl_offset:"
            return int(info.split(key)[1].split()[0])
        wait_for("the replica to catch up", lambda: offset(replica) == offset(master))
        self.sentinels[0].cli("SENTINEL", "FAILOVER", MASTER)
        wait_for("the failover", lambda: all(s.master_port() not in (None, old)
                                             for s in self.sentinels))
        new = self.by_port(self.sentinels[0].master_port())
        wait_for("the old master's demotion",
                 lambda: "role:slave" in self.by_port(old).cli("INFO", "replication"))

        # Until a node has found the new master its RCPTs wait or get a
        # 451 saying the store is unreachable: those are sent again.
        limit_refusals, deadline, k = [], time.monotonic() + 30, 0
        while len(limit_refusals) < 6 and time.monotonic() < deadline:
            n, why = send(self.nodes[k % 3], k % 3)
            k += 1
            accepted += n
            self.assertLessEqual(accepted, 20)
            if why and "cluster-wide" in why:
                self.assertIn("cluster-wide hourly limit 20/20 reached", why)
                limit_refusals.append(why)
            elif why:
                self.assertRegex(why, r"cluster quota (store unreachable|for VPS vps1 not "
                                      r"ready)")
                time.sleep(0.2)
        self.assertEqual(accepted, 20)
        self.assertEqual(len(limit_refusals), 6)
        # every node lost the old master, asked the sentinels again and
        # talks to the new one now
        for i, n in enumerate(self.nodes):
            self.assertEqual(send(n, i)[0], 0)
            self.assertRegex(n.log(), r"event=cluster_redis_down .*error=.*"
                                      r"(connection closed|READONLY|not a master)")
            self.assertRegex(n.log(), r"event=cluster_redis_up redis=sentinels:%s "
                                      r"master=127.0.0.1:%d\n(.|\n)*"
                                      r"event=cluster_redis_up redis=sentinels:%s "
                                      r"master=127.0.0.1:%d\n"
                             % (MASTER, old, MASTER, new.port))
        self.assertGreater(int(new.cli("INFO", "commandstats").split("cmdstat_evalsha:calls=")
                               [1].split(",")[0]), 3)
        # once the nodes' blocks went back, the new master counts what was sent
        w, l = "%s{vps1}:w" % PREFIX, "%s{vps1}:l" % PREFIX
        wait_for("the leases' return", lambda: new.cli("HLEN", l) == "0", timeout=30)
        self.assertEqual(new.cli("HGET", w, "d%d" % utc_day()), "20")
        # the operator's quota show asks the sentinels too
        shown = json.loads(self.nodes[2].ctl("quota", "show", "vps1").stdout)
        self.assertEqual(shown["cluster"]["hour"], {"used": 20, "limit": 20})


if __name__ == "__main__":
    unittest.main()
