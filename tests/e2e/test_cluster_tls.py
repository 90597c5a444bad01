"""Cluster-wide quotas over TLS and AUTH (issue 8), and what
`vmrelay --check` says about [cluster].

A redis-server started by the test listens with TLS only (--port 0
--tls-port), asks for a password and for a client certificate; its
certificate, the clients' and a stranger's are made by
scripts/gen-test-cert.sh for the test. Three vmrelay nodes (kernel mode,
127.0.0.2-4) with tls = yes, tls_ca, tls_cert/tls_key and password_file
share one VPS's limits through it, one of them naming the server by its
address (checked against the certificate's IP SAN). A node given the
stranger's certificate as tls_ca refuses the server, logs why, and keeps
to its fail-safe share.
"""

import json
import os
import subprocess
import time
import unittest

from relay import GEN_CERT, VMRELAY
from test_cluster import (NODES, PREFIX, REDIS_CLI, REDIS_SERVER, Base, Redis, send,
                          start_node, utc_day)

PASSWORD = "e2e-redis-secret"
# a connect and TLS handshake on a loaded machine (or under ASan) may take
# longer than the plain tests' 300 ms; a timeout would be the error logged
TIMEOUT = 1000


def make_cert(d, name, *sans):
    cert, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run([GEN_CERT, name, cert, key] + list(sans), check=True,
                   capture_output=True)
    return cert, key


class TlsRedis(Redis):
    """redis-server on a TLS port only, with a password and client
    certificates required (signed by, here being, the client's own)."""

    def __init__(self):
        super().__init__()
        self.server = make_cert(self.dir, "redis.e2e.test", "redis.e2e.test", "127.0.0.1")
        self.client = make_cert(self.dir, "node.e2e.test")
        self.stranger = make_cert(self.dir, "stranger.e2e.test", "127.0.0.1")
        self.ca = os.path.join(self.dir, "ca.crt")
        with open(self.ca, "w") as f:     # the server trusts its own and the client's
            for c in (self.server[0], self.client[0]):
                with open(c) as g:
                    f.write(g.read())
        self.password_file = os.path.join(self.dir, "password")
        with open(self.password_file, "w") as f:
            f.write(PASSWORD + "\n")

    def args(self):
        return [REDIS_SERVER, "--port", "0", "--tls-port", str(self.port),
                "--bind", "127.0.0.1", "--dir", self.dir, "--save", "",
                "--appendonly", "no", "--logfile", os.path.join(self.dir, "log"),
                "--tls-cert-file", self.server[0], "--tls-key-file", self.server[1],
                "--tls-ca-cert-file", self.ca, "--tls-auth-clients", "yes",
                "--requirepass", PASSWORD]

    def cli(self, *args):
        out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.port), "--tls",
                              "--cacert", self.server[0], "--cert", self.client[0],
                              "--key", self.client[1], "--no-auth-warning", "-a", PASSWORD]
                             + list(args), check=True, capture_output=True, text=True,
                             timeout=10)
        return out.stdout.strip()

    def where(self, ca=None, name="redis.e2e.test"):
        """A node's [cluster] lines for this server."""
        return ["redis = 127.0.0.1:%d" % self.port, "tls = yes",
                "tls_ca = " + (ca or self.server[0]), "tls_cert = " + self.client[0],
                "tls_key = " + self.client[1], "tls_server_name = " + name,
                "password_file = " + self.password_file]


class ClusterTlsTest(Base):
    """Three nodes on one Redis over TLS."""

    @classmethod
    def setUpClass(cls):
        if not os.access(REDIS_SERVER, os.X_OK):
            raise unittest.SkipTest("no redis-server")
        cls.redis = [TlsRedis().start()]
        cls.seed = cls.redis[0]

    def start_tls(self, limits, **kw):
        # the third names the server by its address: the IP SAN is checked
        names = ("redis.e2e.test", "redis.e2e.test", "127.0.0.1")
        self.nodes = [start_node(i, None, limits, where=self.seed.where(name=names[i]),
                                 timeout_ms=TIMEOUT, **kw) for i in range(3)]
        for n in self.nodes:
            self.assertTrue(n.wait_log(r"event=cluster_redis_up", timeout=10), n.log())

    def test_limits_hold_over_tls(self):
        """10 a minute across three nodes talking TLS (client certificate,
        AUTH, the server's name checked): exactly 10 accepted, the 451
        names the cluster-wide window, Redis counts what was sent, and
        quota show reads it over TLS."""
        self.start_tls({"per_minute": 10, "per_hour": 1000, "per_day": 1000})
        accepted, why = self.burst(15)
        self.assertEqual(accepted, 10, why)
        self.assertEqual(len(why), 5)
        for w in why:
            self.assertIn("cluster-wide per-minute limit 10/10 reached", w)
        self.assertEqual(self.settled(10), (10, {}))
        # the operator's quota commands take the same way (a connection of
        # their own, TLS and AUTH too)
        shown = json.loads(self.nodes[1].ctl("quota", "show", "vps1").stdout)
        self.assertEqual(shown["cluster"]["minute"], {"used": 10, "limit": 10})

    def test_name_and_ca_checked(self):
        """A node whose tls_ca is a stranger's certificate, and one that
        expects another server name, refuse the server, say so in the log
        and in stats, and admit only their fail-safe share (2 of 10)."""
        limits = {"per_minute": 10, "per_hour": 1000, "per_day": 1000}
        self.nodes = [
            start_node(0, None, limits, failsafe=20, timeout_ms=TIMEOUT,
                       where=self.seed.where(ca=self.seed.stranger[0])),
            start_node(1, None, limits, failsafe=20, timeout_ms=TIMEOUT,
                       where=self.seed.where(name="other.e2e.test")),
        ]
        for n, what in zip(self.nodes, ("self-signed certificate|unable to get local issuer",
                                        "hostname mismatch")):
            self.assertTrue(n.wait_log(r"event=cluster_redis_down .*server certificate not "
                                       r"accepted for .*(%s)" % what, timeout=10), n.log())
        # the share is per calendar minute: not across a minute's end
        if time.time() % 60 > 50:
            time.sleep(61 - time.time() % 60)
        for i, n in enumerate(self.nodes):
            got = [send(n, i) for _ in range(4)]
            self.assertEqual([g[0] for g in got], [1, 1, 0, 0], (got, n.log()))
            self.assertIn("cluster quota store unreachable and this node's share for "
                          "VPS vps1 used", got[2][1])
            self.assertIs(json.loads(n.ctl("stats").stdout)["cluster"]["redis_up"], False)
            self.assertTrue(n.wait_log(r"event=cluster_failsafe account=vps1 percent=20"))
        # the server saw nothing of theirs
        self.assertEqual(self.seed.cli("HGET", "%s{vps1}:w" % PREFIX, "d%d" % utc_day()), "")


class CheckTest(unittest.TestCase):
    """vmrelay --check validates [cluster] and names file, line and key."""

    def check(self, lines, **kw):
        node = start_node(0, "127.0.0.1:6379", {"per_minute": 10, "per_hour": 100,
                                                "per_day": 100}, where=lines, start=False,
                          **kw)
        try:
            r = subprocess.run([VMRELAY, "-c", node.config_path, "--check"],
                               capture_output=True, text=True, timeout=30)
            with open(node.config_path) as f:
                text = f.read().split("\n")
            return r.returncode, r.stdout + r.stderr, node.config_path, text
        finally:
            node.cleanup()

    def line_of(self, text, key):
        return next(i + 1 for i, l in enumerate(text) if l.startswith(key + " ="))

    def test_good(self):
        rc, out, path, _ = self.check(["sentinels = 127.0.0.1:26379, [::1]:26380",
                                       "master_name = mymaster"])
        self.assertEqual(rc, 0, out)
        self.assertIn(path + ": ok", out)

    def test_errors_name_file_line_key(self):
        cases = [
            (["redis = localhost"], "redis", "'localhost' is not host:port"),
            (["sentinels = 127.0.0.1:26379, 127.0.0.1"], "sentinels",
             "'127.0.0.1' is not host:port"),
            (["sentinels = 127.0.0.1:26379"], "sentinels",
             "[cluster] has sentinels but not master_name"),
            (["redis = 127.0.0.1:6379", "tls = yes"], "tls",
             "[cluster] tls = yes needs tls_ca"),
            (["redis = 127.0.0.1:6379", "tls = maybe"], "tls", "'maybe' is not yes or no"),
            (["redis = 127.0.0.1:6379", "tls_ca = /etc/hostname"], "tls_ca",
             "[cluster] tls_* keys need tls = yes"),
            (["redis = 127.0.0.1:6379", "tls = yes", "tls_ca = /etc/hostname",
              "tls_key = /etc/hostname"], "tls_key", "[cluster] has tls_key but not tls_cert"),
        ]
        for lines, key, what in cases:
            rc, out, path, text = self.check(lines)
            self.assertEqual(rc, 2, out)
            self.assertIn("%s:%d: " % (path, self.line_of(text, key)), out)
            self.assertIn(what, out)
        # lease bounds: start_node writes lease_max = 4
        rc, out, path, text = self.check(["redis = 127.0.0.1:6379"], lease_min=5)
        self.assertEqual(rc, 2, out)
        self.assertIn("%s:%d: lease_max 4 is below lease_min 5 in [cluster]"
                      % (path, self.line_of(text, "lease_max")), out)

    def test_files(self):
        """What only loading the files tells: named with the key and file."""
        cases = [
            (["redis = 127.0.0.1:6379", "tls = yes", "tls_ca = /nonexistent/ca.pem"],
             "[cluster] tls_ca /nonexistent/ca.pem: No such file or directory"),
            (["redis = 127.0.0.1:6379", "tls = yes", "tls_ca = /etc/hostname"],
             "[cluster] tls_ca /etc/hostname: "),
            (["redis = 127.0.0.1:6379", "password_file = /nonexistent/pw"],
             "[cluster] password_file /nonexistent/pw: No such file or directory"),
        ]
        for lines, what in cases:
            rc, out, path, _ = self.check(lines)
            self.assertEqual(rc, 2, out)
            self.assertIn("vmrelay: %s: %s" % (path, what), out)


if __name__ == "__main__":
    unittest.main()
