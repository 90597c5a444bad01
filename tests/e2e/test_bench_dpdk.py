"""vmrelay-bench's DPDK client mode against vmrelay on DPDK, with no kernel
on either side of the SMTP path: the relay (--io dpdk) owns the server end
of a net_memif pair, vmrelay-bench --dpdk the client end, both on our own
TCP/IP stack, without hugepages or a NIC. The relay delivers (over kernel
sockets, as its delivery workers always do) to an aiosmtpd receiver on
loopback.

What vmrelay-bench counted must be what went through: every message it
counts as accepted reaches the receiver, byte for byte after the relay's
Received header (the sum of their SHA-256 digests, computed here, matches
the bench's own), and a refused sender is counted under its reply code.
Needs root (DPDK).
"""

import os
import subprocess
import tempfile
import time
import unittest

from aiosmtpd.controller import Controller

import relay as R
from test_bench import BENCH, bench, free_port, sha256_sum

NET = "10.99.%d" % (os.getpid() % 200 + 20)
RELAY_IP, BENCH_IP = NET + ".1", NET + ".2"
PORT = 25

CONFIG = """[relay]
hostname = {hostname}
listen = 0.0.0.0:{port}
spool_dir = {dir}/spool
accounts = {dir}/accounts.jsonl
control_socket = {dir}/ctl.sock
log_level = info

[io]
mode = dpdk
workers = 1

[delivery]
smarthost = 127.0.0.1:{sink_port}

[dpdk]
eal = --lcores 0@0,1@0 --no-huge -m 512 --no-pci --no-shconf --file-prefix=vrbd{tag}r --log-level=error --vdev=net_memif0,role=server,socket={dir}/memif.sock
ip = {ip}/24

[tls]
cert = {cert}
key = {key}
"""

# The bench's address is the VPS; unlimited, so that the counts are the
# transport's, not the quotas'.
ACCOUNTS = ('{"id":"vps1","ips":["%s"],"hostname":"vps1.example.com",'
            '"domains":["example.com"],"unlimited":true}\n')


class Received:
    """aiosmtpd handler: keeps every message the relay delivers."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.original_content)
        return "250 2.0.0 OK"


@unittest.skipUnless(os.geteuid() == 0, "needs root (DPDK)")
@unittest.skipUnless(os.path.exists(R.VMRELAY) and os.path.exists(BENCH),
                     "vmrelay or vmrelay-bench not built")
class BenchOverMemif(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="vr-e2e-benchdpdk-")
        cls.tag = os.getpid() % 100000
        cls.rec = Received()
        cls.ctl = Controller(cls.rec, hostname="127.0.0.1", port=free_port())
        cls.ctl.start()
        cls.proc = None
        try:
            cls.start_relay()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_relay(cls):
        cert, key = R.test_cert()
        with open(os.path.join(cls.dir, "relay.ini"), "w") as f:
            f.write(CONFIG.format(hostname=R.HOSTNAME, port=PORT, dir=cls.dir, tag=cls.tag,
                                  sink_port=cls.ctl.port, ip=RELAY_IP, cert=cert, key=key))
        with open(os.path.join(cls.dir, "accounts.jsonl"), "w") as f:
            f.write(ACCOUNTS % BENCH_IP)
        cls.log_path = os.path.join(cls.dir, "relay.log")
        with open(cls.log_path, "ab") as log:
            cls.proc = subprocess.Popen([R.VMRELAY, "-c", os.path.join(cls.dir, "relay.ini")],
                                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        R.wait_dpdk_start(cls.proc, cls.log)

    @classmethod
    def log(cls):
        with open(cls.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.proc and cls.proc.poll() is None:
                cls.proc.terminate()
                cls.proc.wait(20)
        finally:
            cls.ctl.stop()
            subprocess.run(["rm", "-rf", cls.dir])

    def run_bench(self, *args):
        """vmrelay-bench --dpdk on the client end of the memif pair, a fresh
        EAL each run; returns (exit status, report, stderr)."""
        eal = ("--lcores 0@1 --no-huge -m 256 --no-pci --no-shconf --file-prefix=vrbd%dc "
               "--log-level=error --vdev=net_memif0,role=client,socket=%s/memif.sock"
               % (self.tag, self.dir))
        return bench("--dpdk", eal, "--dpdk-ip", BENCH_IP + "/24",
                     "--target", "%s:%d" % (RELAY_IP, PORT), "--helo", "vps1.example.com",
                     "--to", "rcpt@example.net", "--hash", "sha256", "--timeout", 20, *args,
                     timeout=50)

    def delivered(self, before, n, timeout=20):
        """The messages delivered since `before` once there are n of them
        (and a moment more, for any the relay should not have sent)."""
        deadline = time.monotonic() + timeout
        while len(self.rec.messages) < before + n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
        return self.rec.messages[before:]

    def check_through(self, n, *args):
        before = len(self.rec.messages)
        rc, r, err = self.run_bench("--from", "user@example.com", "--messages", n, *args)
        self.assertEqual(rc, 0, err)
        self.assertEqual(r["messages"], {"sent": n, "accepted": n, "failed": 0}, err)
        self.assertRegex(r["transport"], r"^dpdk net_memif0 ")
        got = self.delivered(before, n)
        self.assertEqual(len(got), n)
        self.assertEqual(sha256_sum([R.after_received(m) for m in got]), r["hash"]["sum"])
        return r

    def test_pipelined_reused(self):
        self.check_through(300, "--sessions", 8, "--reuse", "--pipelining",
                           "--size", "1k..64k:lognormal")

    def test_new_connections_starttls(self):
        r = self.check_through(40, "--sessions", 4, "--starttls", "--size", "20k")
        self.assertEqual(r["sessions_completed"], 40)

    def test_refused_sender_counted_by_code(self):
        before = len(self.rec.messages)
        rc, r, err = self.run_bench("--from", "user@not-registered.example", "--messages", 6,
                                    "--sessions", 2, "--reuse")
        self.assertEqual(rc, 1, err)
        self.assertEqual(r["messages"], {"sent": 6, "accepted": 0, "failed": 6})
        self.assertEqual(r["failures"], {"MAIL 550": 6}, err)
        self.assertEqual(self.delivered(before, 0), [])


    def test_bad_options_say_why(self):
        for args, why in [
                (["--dpdk", "-l 0", "--target", "10.0.0.1:25"],
                 "--dpdk/--dpdk-ip: give both or neither"),
                (["--dpdk", "-l 0", "--dpdk-ip", "10.0.0.2/24", "--target", "[::1]:25"],
                 "IPv4 only"),
                (["--dpdk", "-l 0", "--dpdk-ip", "10.0.0.2/24", "--target", "10.0.0.1:25",
                  "--source", "10.0.0.3"], "the stack has one address"),
                (["--dpdk", "'-l 0", "--dpdk-ip", "10.0.0.2/24", "--target", "10.0.0.1:25"],
                 "--dpdk: "),
                (["--sink", "--listen", "127.0.0.1:0", "--dpdk", "-l 0"],
                 "takes none of the load generator's own options")]:
            p = subprocess.run([BENCH] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=20)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(why, p.stderr.decode(), args)


if __name__ == "__main__":
    unittest.main()
