"""vmrelay on DPDK (--io dpdk) over our own TCP/IP stack, against real Linux
clients: a "VPS" namespace reaches the relay across a veth pair whose other
end the relay drives with net_af_packet, without hugepages or a NIC.

The test makes two network namespaces (the relay's, so the kernel there
has no address on the relay's interface and stays out of its traffic, and
the VPS's) and the pair, and removes them however it ends. Needs root.

The VPS's end of the pair has transmit checksum offload turned off (what
`ethtool -K IF tx off` does): over a veth the kernel would leave TCP
checksums unfilled for a NIC that is not there.

The relay's configuration for DPDK mode is CONFIG below: [dpdk] eal names
the lcores (main + one worker per [io] workers), no hugepages, no PCI, and
the af_packet port on the relay's end of the pair; [dpdk] ip is the
relay's address on it. Listen addresses are 0.0.0.0 (or that address) with
fixed ports: the stack has no kernel to pick one.
"""

import ctypes
import fcntl
import os
import re
import smtplib
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import relay as R

NET = "10.77.%d" % (os.getpid() % 200 + 20)
RELAY_IP, VPS_IP = NET + ".1", NET + ".2"
TAG = "%d" % (os.getpid() % 100000)
NS_RELAY, NS_VPS = "vrd%sr" % TAG, "vrd%sv" % TAG
IF_RELAY, IF_VPS = "vrd%sr" % TAG, "vrd%sv" % TAG
PORT, TLS_PORT = 25, 465

CONFIG = """[relay]
hostname = {hostname}
listen = 0.0.0.0:{port}, 0.0.0.0:{tls_port} tls=implicit
spool_dir = {dir}/spool
accounts = {dir}/accounts.jsonl
control_socket = {dir}/ctl.sock
log_level = info

[io]
mode = dpdk
workers = 1

[delivery]
smarthost = 127.0.0.1:1   ; mail stays on this machine: a closed port, retried later

[smtp]
max_connections = 2000
max_conn_per_ip = 1500

[dpdk]
eal = -l 0-1 --no-huge -m 512 --no-pci --no-shconf --file-prefix=vr{tag} --vdev=net_af_packet0,iface={iface}
ip = {ip}/24

[limits]
per_minute = 255
per_hour = 100000
per_day = 10000

[tls]
cert = {cert}
key = {key}
"""

LIBC = ctypes.CDLL(None, use_errno=True)

ACCOUNTS = '{"id":"vps1","ips":["%s"],"hostname":"vps1.example.com","domains":["example.com"]}\n'


def sh(*args, check=True):
    return subprocess.run(list(args), check=check, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=30)


def in_vps(func, *args):
    """Runs func(*args) in a thread that has joined the VPS namespace, so
    Python's own sockets (smtplib, raw ICMP) speak from there."""
    out = {}

    def body():
        try:
            fd = os.open("/run/netns/" + NS_VPS, os.O_RDONLY)
            try:
                # CLONE_NEWNET, for this thread only (os.setns is Python 3.12+)
                if LIBC.setns(fd, 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "setns " + NS_VPS)
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


def tx_checksum_off(ifname):
    """`ethtool -K IF tx off` without ethtool: a veth otherwise leaves TCP
    checksums for a NIC to fill in, and af_packet hands the relay the
    frames with them unfilled (its stack drops them as corrupt)."""
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


@unittest.skipUnless(os.geteuid() == 0, "needs root (namespaces, af_packet)")
@unittest.skipUnless(os.path.exists(R.VMRELAY), "vmrelay not built")
class DpdkRelay(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="vr-e2e-dpdk-")
        cls.proc = None
        cls.made = False
        try:
            sh("ip", "netns", "add", NS_RELAY)
            sh("ip", "netns", "add", NS_VPS)
            cls.made = True
            sh("ip", "link", "add", IF_RELAY, "netns", NS_RELAY, "type", "veth",
               "peer", "name", IF_VPS, "netns", NS_VPS)
            sh("ip", "netns", "exec", NS_RELAY, "sysctl", "-qw",
               "net.ipv6.conf.%s.disable_ipv6=1" % IF_RELAY)
            sh("ip", "-n", NS_RELAY, "link", "set", IF_RELAY, "up")
            sh("ip", "-n", NS_VPS, "addr", "add", VPS_IP + "/24", "dev", IF_VPS)
            sh("ip", "-n", NS_VPS, "link", "set", IF_VPS, "up")
            sh("ip", "-n", NS_VPS, "link", "set", "lo", "up")
            in_vps(tx_checksum_off, IF_VPS)
            cls.start_relay()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def start_relay(cls):
        cert, key = R.test_cert()
        cls.config = os.path.join(cls.dir, "relay.ini")
        with open(cls.config, "w") as f:
            f.write(CONFIG.format(hostname=R.HOSTNAME, port=PORT, tls_port=TLS_PORT, dir=cls.dir,
                                  tag=TAG, iface=IF_RELAY, ip=RELAY_IP, cert=cert, key=key))
        with open(os.path.join(cls.dir, "accounts.jsonl"), "w") as f:
            f.write(ACCOUNTS % VPS_IP)
        cls.log_path = os.path.join(cls.dir, "relay.log")
        cls.offset = os.path.getsize(cls.log_path) if os.path.exists(cls.log_path) else 0
        log = open(cls.log_path, "ab")
        cls.proc = subprocess.Popen(["ip", "netns", "exec", NS_RELAY, R.VMRELAY, "-c", cls.config],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while not re.search(r"event=start .*io=dpdk", cls.log()):
            if cls.proc.poll() is not None:
                raise RuntimeError("vmrelay exited with %d:\n%s" % (cls.proc.returncode, cls.log()))
            if time.monotonic() > deadline:
                raise RuntimeError("vmrelay did not start:\n" + cls.log())
            time.sleep(0.05)

    @classmethod
    def log(cls):
        with open(cls.log_path, "rb") as f:
            f.seek(cls.offset)
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
                sh("ip", "netns", "del", NS_VPS, check=False)
                sh("ip", "netns", "del", NS_RELAY, check=False)
            subprocess.run(["rm", "-rf", cls.dir])

    # --- the tests, in name order ---

    def test_1_arp_and_ping(self):
        self.assertEqual(in_vps(ping, RELAY_IP, 3), 3)
        neigh = sh("ip", "-n", NS_VPS, "neigh", "show", RELAY_IP).stdout.decode()
        mac = re.search(r"mac=([0-9A-F:]{17})", self.log()).group(1).lower()
        self.assertIn("lladdr " + mac, neigh)

    def smtp_message(self, subject):
        return R.message(subject, sender="user@example.com")

    def test_2_swaks(self):
        r = sh("ip", "netns", "exec", NS_VPS, "swaks", "--server", RELAY_IP, "--port", str(PORT),
               "--from", "user@example.com", "--to", "rcpt@example.net",
               "--h-From", "<user@example.com>", "--header", "Subject: swaks over dpdk",
               "--timeout", "20", check=False)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        self.assertRegex(out, r"<-  250 2\.0\.0 .*queued as")
        self.assertIn("<-  221 ", out)

    def test_3_swaks_starttls(self):
        r = sh("ip", "netns", "exec", NS_VPS, "swaks", "--server", RELAY_IP, "--port", str(PORT),
               "--tls", "--from", "user@example.com", "--to", "rcpt@example.net",
               "--h-From", "<user@example.com>", "--timeout", "20", check=False)
        out = r.stdout.decode("utf-8", "replace")
        self.assertEqual(r.returncode, 0, out + r.stderr.decode())
        self.assertIn("<-  220 2.0.0 ready to start TLS", out)
        self.assertRegex(out, r"<~  250 2\.0\.0 .*queued as")

    def test_4_smtplib(self):
        def send():
            with smtplib.SMTP(RELAY_IP, PORT, timeout=20) as s:
                s.ehlo("vps1.example.com")
                s.starttls(context=R.client_tls())
                s.ehlo("vps1.example.com")
                return s.sendmail("user@example.com", ["a@example.net", "b@example.net"],
                                  self.smtp_message("smtplib over dpdk"))
        self.assertEqual(in_vps(send), {})

        def implicit():
            with smtplib.SMTP_SSL(RELAY_IP, TLS_PORT, timeout=20, context=R.client_tls()) as s:
                return s.sendmail("user@example.com", ["c@example.net"],
                                  self.smtp_message("implicit TLS over dpdk"))
        self.assertEqual(in_vps(implicit), {})

    def test_5_concurrent(self):
        """1000 connections open at once, each greeted, each saying NOOP and
        QUIT once all are open."""
        n = 1000

        def many():
            socks = []
            try:
                for _ in range(n):
                    s = socket.create_connection((RELAY_IP, PORT), timeout=30)
                    socks.append(s)
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
        self.assertEqual(in_vps(many), "ok")

    def test_9_sigterm(self):
        """SIGTERM: new connections are refused at once, the session in
        flight finishes its message, the relay exits 0."""
        def session():
            s = smtplib.SMTP(RELAY_IP, PORT, timeout=20)
            s.ehlo("vps1.example.com")
            s.mail("user@example.com")
            s.rcpt("a@example.net")
            self.__class__.proc.terminate()
            time.sleep(0.5)
            try:
                socket.create_connection((RELAY_IP, PORT), timeout=2)
                refused = False
            except OSError:
                refused = True
            code, _ = s.data(self.smtp_message("during stop"))
            s.quit()
            return refused, code
        refused, code = in_vps(session)
        self.assertTrue(refused)
        self.assertEqual(code, 250)
        self.assertEqual(self.stop_relay(), 0)
        self.assertIn("event=stop status=0", self.log())


if __name__ == "__main__":
    unittest.main()
