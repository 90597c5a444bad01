"""vmrelay on DPDK (--io dpdk) over our own TCP/IP stack, against real Linux
clients in a "VPS" network namespace, without hugepages or a NIC:

  AfPacket            one worker; the relay drives its end of a veth pair
                      with net_af_packet: ping, swaks (with and without
                      STARTTLS), smtplib (STARTTLS, implicit TLS), 1000
                      concurrent connections, SIGTERM in mid-session.
  AfPacketTwoWorkers  two workers on two af_packet queues (the kernel's
                      fanout is not our flow hash: frames are passed to the
                      worker owning their flow): concurrent sessions, mail,
                      ICMP fragmentation-needed passed to the worker owning
                      the session it quotes.
  AfXdp               one worker on net_af_xdp (an AF_XDP socket on the
                      veth, XDP program attached by the PMD): ping, swaks
                      with STARTTLS, 300 concurrent connections, the idle
                      worker asleep on the XDP socket.
  Tap                 one worker on net_tap, the tap interface moved into
                      the VPS namespace: ping, swaks with STARTTLS, drain.
  AfPacketFaults      one worker, [dpdk] fault dropping 3%, reordering 1%
                      and duplicating 1% of the frames both ways: 200 MB of
                      mail, every message in the spool byte for byte.
  AfPacketAttacks     one worker: a SYN flood of 50k SYNs/s from addresses
                      that never answer while legitimate sessions complete;
                      resets with wrong sequence numbers leave a session up.
  AfPacketIPv6        two workers, [dpdk] ip and ip6, listening on 0.0.0.0
                      and [::]: ping -6 (Neighbor Discovery both ways), swaks
                      -6 plain and with STARTTLS from an address in the
                      account's /64 (accepted, the log naming it), refused
                      from one outside it; IPv6 sessions on both workers;
                      packet-too-big passed to the worker owning the session
                      it quotes.

Each class makes its namespaces (the relay's own, so that the kernel there
has no address on the relay's interface and stays out of its traffic, and
the VPS's) and removes them however it ends. Needs root.

The VPS's interface has transmit checksum offload turned off (what
`ethtool -K IF tx off` does): over a veth or a tap the kernel would leave
TCP checksums for a NIC to fill in, and the relay would see them as corrupt.

The relay's configuration for DPDK mode is CONFIG below: [dpdk] eal names
the lcores (the main one, then one per [io] workers), no hugepages, no PCI,
the port; [dpdk] ip is the relay's address. Listen addresses are 0.0.0.0
(or that address) with fixed ports: the stack has no kernel to pick one.
"""

import ctypes
import fcntl
import json
import os
import random
import re
import smtplib
import socket
import struct
import subprocess
import tempfile
import threading
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

import relay as R

PORT, TLS_PORT = 25, 465
LSAN_SUPP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lsan.supp")
LIBC = ctypes.CDLL(None, use_errno=True)

CONFIG = """[relay]
hostname = {hostname}
listen = 0.0.0.0:{port}, 0.0.0.0:{tls_port} tls=implicit{listen6}
spool_dir = {dir}/spool
accounts = {dir}/accounts.jsonl
control_socket = {dir}/ctl.sock
log_level = info

[io]
mode = dpdk
workers = {workers}

[delivery]
smarthost = 127.0.0.1:1   ; mail stays on this machine: a closed port, retried later

[smtp]
max_connections = 2000
max_conn_per_ip = 1500

[dpdk]
eal = {lcores} --no-huge -m 512 --no-pci --no-shconf --file-prefix=vr{tag} --vdev={vdev}
ip = {ip}/24
{ip6}
{fault}

[limits]
per_minute = 255
per_hour = 100000
per_day = 10000

[tls]
cert = {cert}
key = {key}
"""

ACCOUNTS = '{"id":"vps1","ips":%s,"hostname":"vps1.example.com","domains":["example.com"]}\n'


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def in_netns(ns, func, *args):
    """Runs func(*args) in a thread that has joined network namespace ns, so
    Python's own sockets (smtplib, raw ICMP) speak from there."""
    out = {}

    def body():
        try:
            fd = os.open("/run/netns/" + ns, os.O_RDONLY)
            try:
                # CLONE_NEWNET, for this thread only (os.setns is Python 3.12+)
                if LIBC.setns(fd, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns " + ns)
            finally:
                os.close(fd)
            out["value"] = func(*args)
        except BaseException as e:      # re-raised in the caller
            out["error"] = e
    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def cpu_seconds(pid):
    """User and system time of process pid and all its threads so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tx_checksum_off(ifname):
    """`ethtool -K IF tx off`, without ethtool."""
    ev = ctypes.create_string_buffer(struct.pack("II", 0x17, 0))    # ETHTOOL_STXCSUM
    ifr = struct.pack("16sP", ifname.encode(), ctypes.addressof(ev))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s, 0x8946, ifr)                                  # SIOCETHTOOL
    return True


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def ping(dst, count=3, timeout=1.0):
    """ICMP echo over a raw socket (no ping binary needed): the number of
    replies that came back with our identifier, sequence and payload."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(timeout)
    ok = 0
    for seq in range(count):
        body = b"vmrelay-dpdk-%d" % seq
        head = struct.pack("!BBHHH", 8, 0, 0, 0x5652, seq)
        s.sendto(struct.pack("!BBHHH", 8, 0, checksum(head + body), 0x5652, seq) + body,
                 (dst, 0))
        try:
            while True:
                data, _ = s.recvfrom(2048)
                ihl = (data[0] & 15) * 4
                kind, _, _, ident, sq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
                if kind == 0 and ident == 0x5652 and sq == seq and data[ihl + 8:] == body:
                    ok += 1
                    break
        except socket.timeout:
            pass
    s.close()
    return ok


def concurrent(dst, n, src=None):
    """n connections open at once (from address src if given), each greeted,
    then each saying NOOP and QUIT: "ok", or what went wrong first."""
    socks = []
    try:
        for _ in range(n):
            socks.append(socket.create_connection((dst, PORT), timeout=30,
                                                  source_address=(src, 0) if src else None))
        for s in socks:
            f = s.makefile("rb")
            line = f.readline()
            if not line.startswith(b"220 "):
                return "banner: %r" % line
            s.sendall(b"NOOP\r\nQUIT\r\n")
            a, b = f.readline(), f.readline()
            if not (a.startswith(b"250 ") and b.startswith(b"221 ")):
                return "replies: %r %r" % (a, b)
            if f.read() != b"":
                return "no close after 221"
        return "ok"
    finally:
        for s in socks:
            s.close()


class DpdkBase:
    """A relay on DPDK in namespace ns_relay, a VPS in ns_vps. Subclasses
    set WORKERS, LCORES and SUFFIX and say how the port is made (vdev,
    attach)."""

    WORKERS = 1
    LCORES = "-l 0-1"
    SUFFIX = "a"
    FAULT = ""
    IP6 = False          # [dpdk] ip6 and [::] listeners beside IPv4's

    @classmethod
    def vdev(cls):
        raise NotImplementedError

    @classmethod
    def attach(cls):
        """Links the VPS namespace to the relay's port, after the relay starts."""

    @classmethod
    def setUpClass(cls):
        tag = "%d%s" % (os.getpid() % 100000, cls.SUFFIX)
        cls.tag = tag
        net = "10.77.%d" % (os.getpid() % 200 + 20)
        cls.relay_ip, cls.vps_ip = net + ".1", net + ".2"
        # The relay's /48; the account owns one /64 of it, the VPS also has
        # an address in another (both on-link for the relay).
        net6 = "2001:db8:%x" % (os.getpid() % 200 + 20)
        cls.relay_ip6, cls.account_net6 = net6 + "::1", net6 + ":1::/64"
        cls.vps_ip6, cls.vps_ip6_out = net6 + ":1::2", net6 + ":2::2"
        cls.ns_relay, cls.ns_vps = "vrd%sr" % tag, "vrd%sv" % tag
        cls.if_relay, cls.if_vps = "vrd%sr" % tag, "vrd%sv" % tag
        cls.dir = tempfile.mkdtemp(prefix="vr-e2e-dpdk-")
        cls.proc = None
        cls.made = False
        try:
            sh("ip", "netns", "add", cls.ns_relay)
            sh("ip", "netns", "add", cls.ns_vps)
            cls.made = True
            sh("ip", "-n", cls.ns_vps, "link", "set", "lo", "up")
            cls.prepare()
            cls.start_relay()
            cls.attach()
            in_netns(cls.ns_vps, tx_checksum_off, cls.if_vps)
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def prepare(cls):
        """What must exist before the relay starts."""

    @classmethod
    def vps_address(cls):
        sh("ip", "-n", cls.ns_vps, "addr", "add", cls.vps_ip + "/24", "dev", cls.if_vps)
        if cls.IP6:
            for a in (cls.vps_ip6, cls.vps_ip6_out):
                sh("ip", "-n", cls.ns_vps, "addr", "add", a + "/48", "dev", cls.if_vps, "nodad")
        sh("ip", "-n", cls.ns_vps, "link", "set", cls.if_vps, "up")

    @classmethod
    def make_veth(cls, *queues):
        """The veth pair from the relay's namespace to the VPS's, each end
        given the queue options in queues ("numtxqueues", "1", ...); the
        relay's end without IPv6, so the kernel there sends nothing on it."""
        sh("ip", "link", "add", cls.if_relay, "netns", cls.ns_relay, *queues, "type", "veth",
           "peer", "name", cls.if_vps, "netns", cls.ns_vps, *queues)
        sh("ip", "netns", "exec", cls.ns_relay, "sysctl", "-qw",
           "net.ipv6.conf.%s.disable_ipv6=1" % cls.if_relay)
        sh("ip", "-n", cls.ns_relay, "link", "set", cls.if_relay, "up")
        cls.vps_address()

    @classmethod
    def start_relay(cls):
        cert, key = R.test_cert()
        cls.config = os.path.join(cls.dir, "relay.ini")
        with open(cls.config, "w") as f:
            f.write(CONFIG.format(hostname=R.HOSTNAME, port=PORT, tls_port=TLS_PORT,
                                  dir=cls.dir, workers=cls.WORKERS, lcores=cls.LCORES,
                                  tag=cls.tag, vdev=cls.vdev(), ip=cls.relay_ip,
                                  fault="fault = " + cls.FAULT if cls.FAULT else "",
                                  listen6=", [::]:%d, [::]:%d tls=implicit" % (PORT, TLS_PORT)
                                  if cls.IP6 else "",
                                  ip6="ip6 = %s/48" % cls.relay_ip6 if cls.IP6 else "",
                                  cert=cert, key=key))
        ips = [cls.vps_ip] + ([cls.account_net6] if cls.IP6 else [])
        with open(os.path.join(cls.dir, "accounts.jsonl"), "w") as f:
            f.write(ACCOUNTS % json.dumps(ips))
        cls.log_path = os.path.join(cls.dir, "relay.log")
        log = open(cls.log_path, "ab")
        cls.proc = subprocess.Popen(["ip", "netns", "exec", cls.ns_relay, R.VMRELAY,
                                     "-c", cls.config],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        R.wait_dpdk_start(cls.proc, cls.log)

    @classmethod
    def log(cls):
        with open(cls.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    @classmethod
    def stop_relay(cls, timeout=20):
        if cls.proc and cls.proc.poll() is None:
            cls.proc.terminate()
            try:
                return cls.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait()
                raise AssertionError("vmrelay did not stop within %ds of SIGTERM" % timeout)
        return cls.proc.returncode if cls.proc else None

    @classmethod
    def tearDownClass(cls):
        try:
            cls.stop_relay()
        finally:
            if cls.made:
                sh("ip", "netns", "del", cls.ns_vps, check=False)
                sh("ip", "netns", "del", cls.ns_relay, check=False)
            subprocess.run(["rm", "-rf", cls.dir])

    def vps(self, func, *args):
        return in_netns(self.ns_vps, func, *args)

    def ctl(self, *args):
        """vmrelayctl against the relay's control socket: the CompletedProcess."""
        return subprocess.run([R.VMRELAYCTL, "-s", os.path.join(self.dir, "ctl.sock"), *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)

    def io_metrics(self):
        """The workers' own counters from `metrics`: {name: {worker: value}}
        for every vmrelay_io_* family, each checked to be a counter."""
        r = self.ctl("metrics")
        self.assertEqual(r.returncode, 0, r.stderr)
        text = json.loads(r.stdout)["metrics"]
        out = {}
        for fam in text_string_to_metric_families(text):
            if fam.name.startswith("vmrelay_io_"):
                self.assertEqual(fam.type, "counter", fam.name)
                out[fam.name[len("vmrelay_io_"):]] = {
                    s.labels["worker"]: s.value for s in fam.samples}
        return out

    def swaks(self, *extra):
        r = sh("ip", "netns", "exec", self.ns_vps, "swaks", "--server", self.relay_ip,
               "--port", str(PORT), "--from", "user@example.com", "--to", "rcpt@example.net",
               "--h-From", "<user@example.com>", "--timeout", "20", *extra, check=False)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        return out

    def swaks_tls(self):
        """A message with STARTTLS, accepted over TLS."""
        out = self.swaks("--tls")
        self.assertIn("<-  220 2.0.0 ready to start TLS", out)
        self.assertRegex(out, r"<~  250 2\.0\.0 .*queued as")
        return out

    def message(self, subject):
        return R.message(subject, sender="user@example.com")

    def assert_path_mtu_steered(self, relay_ip, me, routers):
        """ICMP fragmentation-needed or ICMPv6 packet-too-big messages from
        each of routers (the kernel's fanout puts them on either queue),
        quoting the banner a session from me has in flight: each reaches the
        worker owning the session, whose MSS each lowers (MTUs 1400, 1390,
        ..., each below the last)."""
        relay_mac = link_mac(self.ns_relay, self.if_relay)
        vps_mac = link_mac(self.ns_vps, self.if_vps)
        v6 = ":" in me

        def run():
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)) as sock:
                sock.bind((self.if_vps, 0))
                sock.settimeout(0.2)
                seq = hold_unacked(sock, relay_mac, vps_mac, relay_ip, me, 40050)
                quoted = (tcp6_segment if v6 else tcp_segment)(relay_ip, me, PORT, 40050, seq,
                                                               1001, 0x18)
                for i, router in enumerate(routers):
                    icmp = (packet_too_big if v6 else frag_needed)(router, 1400 - 10 * i, quoted)
                    sock.send(relay_mac + vps_mac + (b"\x86\xdd" if v6 else b"\x08\x00") + icmp)
                    time.sleep(0.05)    # in order, whichever way each goes
            time.sleep(0.2)
        before = self.io_metrics()
        self.vps(run)
        after = self.io_metrics()
        for name in ("tcp_pmtu_updates", "icmp_pmtu_rx"):
            got = {w: after[name][w] - before[name].get(w, 0) for w in after[name]}
            owner = max(got, key=got.get)
            self.assertEqual(got, {owner: len(routers), str(1 - int(owner)): 0}, name)

    def assert_idle_worker_sleeps(self):
        """With a session open and silent, the worker sleeps (on its packet
        or XDP socket) instead of polling: the relay uses under 5% of a cpu
        over 2 s, and still answers."""
        def idle():
            with smtplib.SMTP(self.relay_ip, PORT, timeout=20) as s:
                s.ehlo("vps1.example.com")
                time.sleep(0.3)
                before = cpu_seconds(self.proc.pid)
                time.sleep(2)
                used = cpu_seconds(self.proc.pid) - before
                return used, s.noop()[0]
        used, code = self.vps(idle)
        self.assertLess(used, 0.1, "an idle relay used %.3f cpu seconds in 2 s" % used)
        self.assertEqual(code, 250)

    def assert_clean_stop(self):
        """SIGTERM: the relay exits 0 and says so."""
        self.assertEqual(self.stop_relay(), 0)
        self.assertIn("event=stop status=0", self.log())


class AfPacketBase(DpdkBase):

    @classmethod
    def vdev(cls):
        q = ",qpairs=%d" % cls.WORKERS if cls.WORKERS > 1 else ""
        return "net_af_packet0,iface=%s%s" % (cls.if_relay, q)

    @classmethod
    def prepare(cls):
        cls.make_veth()


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, af_packet)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class AfPacket(AfPacketBase, unittest.TestCase):
    """The tests run in name order; test_9 stops the relay."""

    def test_1_arp_and_ping(self):
        self.assertEqual(self.vps(ping, self.relay_ip, 3), 3)
        neigh = sh("ip", "-n", self.ns_vps, "neigh", "show", self.relay_ip).stdout.decode()
        mac = re.search(r"mac=([0-9A-F:]{17})", self.log()).group(1).lower()
        self.assertIn("lladdr " + mac, neigh)

    def test_2_swaks(self):
        out = self.swaks("--header", "Subject: swaks over dpdk")
        self.assertRegex(out, r"<-  250 2\.0\.0 .*queued as")
        self.assertIn("<-  221 ", out)

    def test_3_swaks_starttls(self):
        self.swaks_tls()

    def test_4_smtplib(self):
        def send():
            with smtplib.SMTP(self.relay_ip, PORT, timeout=20) as s:
                s.ehlo("vps1.example.com")
                s.starttls(context=R.client_tls())
                s.ehlo("vps1.example.com")
                return s.sendmail("user@example.com", ["a@example.net", "b@example.net"],
                                  self.message("smtplib over dpdk"))
        self.assertEqual(self.vps(send), {})

        def implicit():
            with smtplib.SMTP_SSL(self.relay_ip, TLS_PORT, timeout=20,
                                  context=R.client_tls()) as s:
                return s.sendmail("user@example.com", ["c@example.net"],
                                  self.message("implicit TLS over dpdk"))
        self.assertEqual(self.vps(implicit), {})

    def test_5_concurrent(self):
        self.assertEqual(self.vps(concurrent, self.relay_ip, 1000), "ok")

    def test_6_idle_worker_sleeps(self):
        """Asleep on the packet socket (wake_fds=1 at start), not waking every
        few microseconds to look (11% of a cpu before)."""
        self.assert_idle_worker_sleeps()
        self.assertIn("wake_fds=1", self.log())

    def test_7_stats_and_metrics_count_frames(self):
        """The worker's own counters (frames, TCP) are in stats and metrics
        while it runs, per worker, and move with a session."""
        before = self.io_metrics()
        self.swaks("--header", "Subject: counted")
        r = self.ctl("stats")
        self.assertEqual(r.returncode, 0, r.stderr)
        stats = json.loads(r.stdout)
        after = self.io_metrics()
        for name in ("rx_frames", "tx_frames", "rx_bytes", "tx_bytes", "tcp_segs_in",
                     "tcp_segs_out", "tcp_passive_opens", "tcp_established"):
            self.assertEqual(sorted(after[name]), ["0"], name)
            # one connection; and frames and segments for its handshake,
            # dialogue and close
            least = 1 if name in ("tcp_passive_opens", "tcp_established") else 3
            self.assertGreaterEqual(after[name]["0"] - before[name]["0"], least, name)
            w = stats["workers"][0]["io_" + name]
            self.assertEqual(stats["total"]["io_" + name], w, name)
            self.assertLessEqual(before[name]["0"], w, name)
            self.assertLessEqual(w, after[name]["0"], name)
        self.assertIn("tcp_retransmits", after)
        self.assertIn("tcp_cookies_sent", after)
        self.assertIn("net_dropped", after)

    def test_9_sigterm(self):
        """SIGTERM: new connections are refused at once, the session in
        flight finishes its message, the relay exits 0."""
        def session():
            s = smtplib.SMTP(self.relay_ip, PORT, timeout=20)
            s.ehlo("vps1.example.com")
            s.mail("user@example.com")
            s.rcpt("a@example.net")
            self.__class__.proc.terminate()
            time.sleep(0.5)
            try:
                socket.create_connection((self.relay_ip, PORT), timeout=2).close()
                refused = False
            except OSError:
                refused = True
            code, _ = s.data(self.message("during stop"))
            s.quit()
            return refused, code
        refused, code = self.vps(session)
        self.assertTrue(refused)
        self.assertEqual(code, 250)
        self.assert_clean_stop()


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, af_packet)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class AfPacketTwoWorkers(AfPacketBase, unittest.TestCase):
    """Two worker lcores (sharing the second cpu of a small machine)."""

    WORKERS = 2
    LCORES = "--lcores 0@0,1@1,2@1"
    SUFFIX = "b"

    def test_1_frag_needed_steered_to_owner(self):
        net = self.relay_ip.rsplit(".", 1)[0]
        self.assert_path_mtu_steered(self.relay_ip, net + ".50",
                                     ["%s.%d" % (net, 100 + i) for i in range(8)])

    def test_sessions_on_both_workers(self):
        self.assertEqual(self.vps(concurrent, self.relay_ip, 600), "ok")
        self.swaks_tls()
        live = self.io_metrics()
        self.assertEqual(self.stop_relay(), 0)
        stats = {w: (int(s), int(o)) for w, s, o in re.findall(
            r"event=worker_stats worker=(\d) .*? steered=(\d+) .*?tcp_passive_opens=(\d+)",
            self.log())}
        self.assertEqual(sorted(stats), ["0", "1"])
        # metrics showed each worker's own connections while it ran: no
        # connection came after them
        self.assertEqual({w: o for w, (_, o) in stats.items()},
                         {w: int(v) for w, v in live["tcp_passive_opens"].items()})
        # 601 connections (and test_1's) spread over both workers by the
        # flow hash, and the frames the kernel's fanout put on the other
        # queue handed over
        self.assertEqual(sum(o for _, o in stats.values()), 602)
        for w, (steered, opens) in stats.items():
            self.assertGreater(opens, 100, w)
        self.assertGreater(sum(s for s, _ in stats.values()), 0)


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, XDP)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class AfXdp(DpdkBase, unittest.TestCase):
    """One worker on net_af_xdp. The veth has one queue at both ends: the
    PMD binds its socket to rx queue 0, a frame the VPS sent on another tx
    queue would arrive on an rx queue without one (and go to the kernel),
    and veth refuses XDP with fewer rx queues than its peer has tx queues.
    The tests run in name order."""

    SUFFIX = "x"

    @classmethod
    def vdev(cls):
        return "net_af_xdp0,iface=%s,start_queue=0,queue_count=1" % cls.if_relay

    @classmethod
    def prepare(cls):
        cls.make_veth("numtxqueues", "1", "numrxqueues", "1")

    @classmethod
    def setUpClass(cls):
        # A sanitizer build would fail the relay's exit for DPDK's own leak
        # (tests/lsan.supp); the relay takes the environment as it starts.
        saved = os.environ.get("LSAN_OPTIONS")
        os.environ["LSAN_OPTIONS"] = "suppressions=" + LSAN_SUPP
        try:
            super().setUpClass()
        except RuntimeError as e:
            # The one reason to skip: this kernel will not have an XDP
            # socket on a veth, as the PMD says when it sets up its queue.
            if "Failed to create xsk socket" in str(e):
                raise unittest.SkipTest("the kernel refuses an AF_XDP socket on a veth: %s"
                                        % str(e).strip().splitlines()[-1]) from e
            raise
        finally:
            if saved is None:
                del os.environ["LSAN_OPTIONS"]
            else:
                os.environ["LSAN_OPTIONS"] = saved

    def test_1_ping(self):
        self.assertEqual(self.vps(ping, self.relay_ip, 3), 3)
        self.assertRegex(self.log(), r"port=net_af_xdp0 .*wake_fds=1")
        link = sh("ip", "-n", self.ns_relay, "link", "show", self.if_relay).stdout.decode()
        self.assertIn(" xdp", link)

    def test_2_swaks_starttls(self):
        self.swaks_tls()

    def test_3_concurrent(self):
        self.assertEqual(self.vps(concurrent, self.relay_ip, 300), "ok")

    def test_4_idle_worker_sleeps(self):
        """Asleep on the XDP socket, not napping on a timer."""
        self.assert_idle_worker_sleeps()

    def test_9_sigterm(self):
        self.assert_clean_stop()
        stats = re.search(r"event=worker_stats worker=0 .*? rx_frames=(\d+) ", self.log())
        self.assertGreater(int(stats.group(1)), 1000)


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, tap)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class Tap(DpdkBase, unittest.TestCase):
    """net_tap makes its interface in the relay's namespace; it is moved
    into the VPS's, the relay keeping its end."""

    SUFFIX = "t"

    @classmethod
    def vdev(cls):
        return "net_tap0,iface=" + cls.if_vps

    @classmethod
    def attach(cls):
        sh("ip", "-n", cls.ns_relay, "link", "set", cls.if_vps, "netns", cls.ns_vps)
        cls.vps_address()

    def test_ping_and_mail_then_drain(self):
        """... and `vmrelayctl drain` stops the workers as SIGTERM does."""
        self.assertEqual(self.vps(ping, self.relay_ip, 3), 3)
        self.swaks_tls()
        r = self.ctl("drain")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.proc.wait(20), 0)
        self.assertIn("event=drained", self.log())


def random_body(rng, size):
    """size bytes of printable lines (CRLF, at most 78 octets), some
    starting with a dot, so that dot-stuffing is exercised too."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-"
    raw = rng.randbytes(size).translate(bytes(alphabet[i % len(alphabet)] for i in range(256)))
    lines, i = [], 0
    while i < size:
        n = rng.randint(0, 76)
        lines.append(raw[i:i + n] + b"\r\n")
        i += n
    return b"".join(lines)


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, af_packet)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class AfPacketFaults(AfPacketBase, unittest.TestCase):
    """The relay's own fault layer loses, reorders and duplicates frames in
    both directions (this machine has no netem); Linux's TCP and ours must
    still carry every byte."""

    SUFFIX = "f"
    FAULT = "drop=3,reorder=1,dup=1,seed=11"
    SESSIONS, MESSAGES, SIZE = 4, 40, 5 << 20      # 200 MiB in all

    def test_mail_byte_exact(self):
        rng = random.Random(11)
        # one body per session, each message of it tagged by its subject
        bodies = [random_body(rng, self.SIZE) for _ in range(self.SESSIONS)]
        sent = {}
        lock = threading.Lock()

        def session(i):
            with smtplib.SMTP(self.relay_ip, PORT, timeout=60) as s:
                s.ehlo("vps1.example.com")
                for j in range(i, self.MESSAGES, self.SESSIONS):
                    head = ("From: <user@example.com>\r\nTo: <rcpt@example.net>\r\n"
                            "Subject: lossy %d\r\n\r\n" % j).encode()
                    msg = head + bodies[i]
                    s.mail("user@example.com")
                    s.rcpt("rcpt@example.net")
                    code, reply = s.data(msg)
                    if code != 250:
                        raise AssertionError("message %d: %d %r" % (j, code, reply))
                    with lock:
                        sent[R.queued_qid(reply)] = msg

        def all_sessions():
            ts = [threading.Thread(target=lambda i=i: errors.extend(catch(session, i)))
                  for i in range(self.SESSIONS)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        def catch(f, *a):
            try:
                f(*a)
                return []
            except BaseException as e:
                return [e]
        errors = []
        self.vps(all_sessions)
        self.assertEqual(errors, [])
        self.assertEqual(len(sent), self.MESSAGES)
        spool = os.path.join(self.dir, "spool")
        for qid, msg in sent.items():
            out = subprocess.run([R.SPOOL_TOOL, spool, "show", qid], check=True,
                                 stdout=subprocess.PIPE, timeout=60).stdout
            stored = out[out.find(b"Received: "):]
            self.assertEqual(R.after_received(stored), msg, qid)
        self.assertEqual(self.stop_relay(), 0)
        # the faults did happen, both ways, and the relay's TCP recovered
        log = self.log()
        for way in ("rx", "tx"):
            m = re.search(r"event=fault_stats worker=0 dir=%s in=(\d+) dropped=(\d+) .*"
                          r"duplicated=(\d+) .*reordered=(\d+)" % way, log)
            sent, dropped, dups, reordered = map(int, m.groups())
            self.assertGreater(sent, 100000 if way == "rx" else 10000, way)
            self.assertTrue(0.02 < dropped / sent < 0.04, (way, dropped, sent))
            self.assertTrue(dups > 0 and reordered > 0, way)
        m = re.search(r"event=worker_stats .*tcp_retransmits=(\d+)", log)
        self.assertGreater(int(m.group(1)), 0)


def ip_packet(src, dst, proto, payload):
    """An IPv4 header (DF, no options, checksum filled in) before payload."""
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    return ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:] + payload


def tcp_header(sport, dport, seq, ack, flags, window, options, pseudo):
    """A TCP header (options padded to words by the caller, no payload),
    its checksum over pseudo, the pseudo-header less the length."""
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (5 + len(options) // 4) << 4, flags,
                      window, 0, 0) + options
    csum = checksum(pseudo + struct.pack("!H", len(tcp)) + tcp)
    return tcp[:16] + struct.pack("!H", csum) + tcp[18:]


def tcp_segment(src, dst, sport, dport, seq, ack, flags, window=65535, options=b""):
    """An IPv4 header and a TCP header, checksums filled in: for a raw
    socket with IP_HDRINCL."""
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + b"\0\x06"
    return ip_packet(src, dst, socket.IPPROTO_TCP,
                     tcp_header(sport, dport, seq, ack, flags, window, options, pseudo))


def ip6_packet(src, dst, nh, payload):
    return struct.pack("!IHBB16s16s", 6 << 28, len(payload), nh, 255,    # as ND requires
                       socket.inet_pton(socket.AF_INET6, src),
                       socket.inet_pton(socket.AF_INET6, dst)) + payload


def pseudo6(src, dst, nh):
    """RFC 8200 8.1's pseudo-header less the length, which the caller adds
    as 16 bits (the upper 16 are zero, and the order of the words does not
    change their sum)."""
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) +
            struct.pack("!HBB", 0, 0, nh))


def tcp6_segment(src, dst, sport, dport, seq, ack, flags, window=65535, options=b""):
    return ip6_packet(src, dst, socket.IPPROTO_TCP,
                      tcp_header(sport, dport, seq, ack, flags, window, options,
                                 pseudo6(src, dst, socket.IPPROTO_TCP)))


def icmp6_packet(src, dst, body):
    """An ICMPv6 message (body from its type on, checksum zero) in IPv6."""
    csum = checksum(pseudo6(src, dst, 58) + struct.pack("!H", len(body)) + body)
    return ip6_packet(src, dst, 58, body[:2] + struct.pack("!H", csum) + body[4:])


def frag_needed(src, mtu, quoted):
    """ICMP fragmentation needed (RFC 1191) from src, quoting the IPv4
    packet quoted (its header and the first 8 bytes after it)."""
    icmp = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quoted[:28]
    icmp = icmp[:2] + struct.pack("!H", checksum(icmp)) + icmp[4:]
    dst = socket.inet_ntoa(quoted[12:16])
    return ip_packet(src, dst, socket.IPPROTO_ICMP, icmp)


def packet_too_big(src, mtu, quoted):
    """ICMPv6 packet too big (RFC 4443 3.2) from src, quoting quoted."""
    dst = socket.inet_ntop(socket.AF_INET6, quoted[8:24])
    return icmp6_packet(src, dst, struct.pack("!BBHI", 2, 0, 0, mtu) + quoted)


def link_mac(ns, ifname):
    r = sh("ip", "-n", ns, "-j", "link", "show", ifname)
    return bytes.fromhex(json.loads(r.stdout)[0]["address"].replace(":", ""))


def hold_unacked(sock, relay_mac, vps_mac, relay_ip, me, sport):
    """A session from me:sport (an address no kernel owns, whose ARP or
    neighbour solicitation this answers) to relay_ip:25, IPv4 or IPv6, over
    the packet socket sock, that never acknowledges the relay's data: its
    banner stays in flight, as a path MTU message requires. Returns the
    banner's sequence number."""
    v6 = ":" in me
    segment = tcp6_segment if v6 else tcp_segment
    etype = b"\x86\xdd" if v6 else b"\x08\x00"
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    me_b, relay_b = socket.inet_pton(fam, me), socket.inet_pton(fam, relay_ip)

    def send(ip):
        sock.send(relay_mac + vps_mac + etype + ip)
    send(segment(me, relay_ip, sport, PORT, 1000, 0, 0x02, options=b"\x02\x04\x05\xb4"))
    isn = None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            f = sock.recv(2048)
        except socket.timeout:
            continue
        if f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[38:42] == me_b:
            sock.send(f[6:12] + vps_mac + b"\x08\x06" + f[14:20] + b"\x00\x02" + vps_mac +
                      f[38:42] + f[22:28] + f[28:32])   # ARP reply
            continue
        if f[12:14] != etype:
            continue
        ip = f[14:]
        if v6:
            if ip[6] == 58 and ip[40] == 135 and ip[48:64] == me_b:   # solicitation
                src = socket.inet_ntop(fam, ip[8:24])
                na = struct.pack("!BBHI", 136, 0, 0, 0x60000000) + me_b + b"\x02\x01" + vps_mac
                sock.send(f[6:12] + vps_mac + etype + icmp6_packet(me, src, na))
                continue
            if ip[6] != socket.IPPROTO_TCP or ip[8:24] != relay_b:
                continue
            tcp = ip[40:]
        else:
            if ip[9] != socket.IPPROTO_TCP or ip[12:16] != relay_b:
                continue
            tcp = ip[(ip[0] & 15) * 4:]
        sp, dp, seq = struct.unpack("!HHI", tcp[:8])
        if (sp, dp) != (PORT, sport):
            continue
        if isn is None and tcp[13] == 0x12:              # SYN-ACK
            isn = seq
            send(segment(me, relay_ip, sport, PORT, 1001, isn + 1, 0x10))
        elif isn is not None and len(tcp) > (tcp[12] >> 4) * 4:
            return seq                                   # the banner: never acked
    raise AssertionError("no banner from the relay")


def raw_sender():
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    return s


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, af_packet, raw sockets)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class AfPacketAttacks(AfPacketBase, unittest.TestCase):

    SUFFIX = "s"
    FLOOD_RATE, FLOOD_SECONDS = 50000, 3

    def test_syn_flood(self):
        """SYNs from 200 on-link addresses nobody answers for: the relay's
        SYN-ACKs go nowhere, its SYN queue fills and it answers with
        cookies; meanwhile 10 VPS sessions each deliver a message."""
        net = self.relay_ip.rsplit(".", 1)[0]
        rng = random.Random(5)
        n = self.FLOOD_RATE * self.FLOOD_SECONDS
        syns = [tcp_segment("%s.%d" % (net, 10 + i % 200), self.relay_ip,
                            rng.randrange(1024, 65536), PORT, rng.getrandbits(32), 0, 0x02)
                for i in range(n)]
        done = {}

        def flood():
            s = raw_sender()
            t0 = time.monotonic()
            for i, p in enumerate(syns):
                s.sendto(p, (self.relay_ip, 0))
                if i % 1000 == 999:     # hold the rate
                    ahead = (i + 1) / self.FLOOD_RATE - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
            done["seconds"] = time.monotonic() - t0

        def legit(results):
            time.sleep(0.5)             # into the flood
            for k in range(10):
                with smtplib.SMTP(self.relay_ip, PORT, timeout=20) as s:
                    s.ehlo("vps1.example.com")
                    results.append(s.sendmail("user@example.com", ["a@example.net"],
                                              self.message("during a flood %d" % k)))

        def both():
            results = []
            f = threading.Thread(target=flood)
            f.start()
            try:
                legit(results)
            finally:
                f.join()
            return results
        self.assertEqual(self.vps(both), [{}] * 10)
        rate = n / done["seconds"]
        self.assertGreater(rate, 0.9 * self.FLOOD_RATE, "the flood ran at %.0f SYNs/s" % rate)
        self.assertEqual(self.stop_relay(), 0)
        m = re.search(r"tcp_syn_queue_full=(\d+) tcp_cookies_sent=(\d+)", self.log())
        self.assertGreater(int(m.group(1)), 0)
        self.assertGreater(int(m.group(2)), 0)

    def test_blind_reset(self):
        """200 resets for a live session's 4-tuple with random sequence
        numbers (RFC 5961: outside the window dropped, inside it answered
        with a challenge ACK, never a reset unless exact): the session goes
        on."""
        def attack():
            with smtplib.SMTP(self.relay_ip, PORT, timeout=20) as s:
                s.ehlo("vps1.example.com")
                sport = s.sock.getsockname()[1]
                raw = raw_sender()
                rng = random.Random(9)
                for _ in range(200):
                    raw.sendto(tcp_segment(self.vps_ip, self.relay_ip, sport, PORT,
                                           rng.getrandbits(32), 0, 0x04), (self.relay_ip, 0))
                time.sleep(0.2)
                code, _ = s.noop()
                res = s.sendmail("user@example.com", ["a@example.net"],
                                 self.message("after blind resets"))
                return code, res
        self.assertEqual(self.vps(attack), (250, {}))


if __name__ == "__main__":
    unittest.main()


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, af_packet)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class AfPacketIPv6(AfPacketBase, unittest.TestCase):
    """The relay dual-stack on two workers (sharing the second cpu): the
    VPS reaches it over IPv6 by Neighbor Discovery alone (no static
    neighbour), and policy sees the client's IPv6 address, so the account's
    /64 is what lets it send. The tests run in name order; test_9 stops the
    relay."""

    WORKERS = 2
    LCORES = "--lcores 0@0,1@1,2@1"
    SUFFIX = "6"
    IP6 = True

    def swaks6(self, source, *extra):
        r = sh("ip", "netns", "exec", self.ns_vps, "swaks", "-6", "--server", self.relay_ip6,
               "--local-interface", source, "--port", str(PORT),
               "--from", "user@example.com", "--to", "rcpt@example.net",
               "--h-From", "<user@example.com>", "--timeout", "20", *extra, check=False)
        return r.returncode, r.stdout.decode("utf-8", "replace") + r.stderr.decode()

    def test_1_ping6(self):
        r = sh("ip", "netns", "exec", self.ns_vps, "ping", "-6", "-c", "3", "-i", "0.2",
               "-W", "2", "-I", self.vps_ip6, self.relay_ip6, check=False)
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        self.assertIn("3 received", out)
        # The VPS learned the relay's MAC from its advertisement.
        neigh = sh("ip", "-n", self.ns_vps, "-6", "neigh", "show", self.relay_ip6).stdout.decode()
        mac = re.search(r"mac=([0-9A-F:]{17})", self.log()).group(1).lower()
        self.assertIn("lladdr " + mac, neigh)
        self.assertIn("ip6=%s/48" % self.relay_ip6, self.log())

    def test_2_swaks6_accepted(self):
        code, out = self.swaks6(self.vps_ip6, "--header", "Subject: swaks over IPv6")
        self.assertEqual(code, 0, out)
        self.assertRegex(out, r"<-  250 2\.0\.0 .*queued as")
        # The session and policy saw the client's IPv6 address.
        self.assertIn(self.vps_ip6, self.log())

    def test_3_swaks6_starttls(self):
        code, out = self.swaks6(self.vps_ip6, "--tls")
        self.assertEqual(code, 0, out)
        self.assertIn("<-  220 2.0.0 ready to start TLS", out)
        self.assertRegex(out, r"<~  250 2\.0\.0 .*queued as")

    def test_4_outside_the_64_refused(self):
        code, out = self.swaks6(self.vps_ip6_out)
        self.assertNotEqual(code, 0, out)
        self.assertRegex(out, r"<\*\* +550 5\.7\.1 relay access denied: %s is not a registered"
                         % re.escape(self.vps_ip6_out))
        self.assertNotRegex(out, r"queued as")

    def test_5_ipv4_still_served(self):
        self.assertEqual(self.vps(ping, self.relay_ip, 2), 2)
        self.swaks_tls()

    def test_6_sessions_on_both_workers(self):
        """300 IPv6 connections at once, spread over both workers by the
        Toeplitz hash of their IPv6 4-tuples."""
        self.assertEqual(self.vps(concurrent, self.relay_ip6, 300, self.vps_ip6), "ok")
        opens = self.io_metrics()["tcp_passive_opens"]
        self.assertEqual(sorted(opens), ["0", "1"])
        for w, n in opens.items():
            self.assertGreater(n, 40, w)

    def test_7_packet_too_big_steered_to_owner(self):
        net6 = self.relay_ip6.rsplit("::", 1)[0]
        self.assert_path_mtu_steered(self.relay_ip6, net6 + ":1::50",
                                     ["%s::%x" % (net6, 0x100 + i) for i in range(8)])

    def test_9_sigterm(self):
        self.assert_clean_stop()
