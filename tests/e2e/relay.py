"""Shared helpers of the end-to-end tests: a real vmrelay on loopback.

Relay writes a configuration, an accounts file and a test certificate into a
private temporary directory, starts build/dpdk-app/vmrelay --io kernel (the
build directory comes from $VMRELAY_BUILD, default build/), waits for its
start line, stops it with SIGTERM (or SIGKILL for crash tests) and reads its
spool with build/engine/spool/vmrelay-spool, the operator's own tool. Its
control socket is ctl.sock in that directory (Relay.ctl runs vmrelayctl).

Client is a small raw SMTP client for what smtplib will not do on purpose
(smuggling, pipelining behind STARTTLS, BDAT, talking first).

Accounts: vps1 is registered by address (127.0.0.1, ::1) for example.com;
vps2 has no loopback address and authenticates with TOKEN after TLS, so it
is the client from 127.0.0.2. Anyone else from 127.0.0.2 is unregistered.

Limits: unless a test passes its own [limits], a relay's are LIMITS, high
enough that a test about something else never meets a quota.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.abspath(os.environ.get("VMRELAY_BUILD", os.path.join(ROOT, "build")))
VMRELAY = os.path.join(BUILD, "dpdk-app", "vmrelay")
SPOOL_TOOL = os.path.join(BUILD, "engine", "spool", "vmrelay-spool")
VMRELAYCTL = os.path.join(BUILD, "engine", "ctl", "vmrelayctl")
GEN_CERT = os.path.join(ROOT, "scripts", "gen-test-cert.sh")

HOSTNAME = "relay.e2e.test"
TOKEN = "e2e-token-of-vps2"
OUTSIDER = "127.0.0.2"          # not registered; vps2 uses it with AUTH

# [limits] of a relay whose test is not about quotas: the minute window at
# its ceiling, the hour and the day out of reach (per_day_max stays 10000).
LIMITS = {"per_minute": 255, "per_hour": 100000, "per_day": 10000}

ACCOUNTS = [
    {"id": "vps1", "ips": ["127.0.0.1", "::1"], "hostname": "vps1.example.com",
     "domains": ["example.com"]},
    {"id": "vps2", "ips": ["192.0.2.10"], "hostname": "vps2.example.org",
     "domains": ["example.org"],
     "auth_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()},
]

_cert_dir = None


def test_cert():
    """One self-signed certificate for the whole run: (cert, key)."""
    global _cert_dir
    if _cert_dir is None:
        _cert_dir = tempfile.mkdtemp(prefix="vr-e2e-cert-")
        subprocess.run([GEN_CERT, HOSTNAME, os.path.join(_cert_dir, "tls.crt"),
                        os.path.join(_cert_dir, "tls.key"), HOSTNAME, "127.0.0.1"],
                       check=True, stdout=subprocess.DEVNULL)
    return os.path.join(_cert_dir, "tls.crt"), os.path.join(_cert_dir, "tls.key")


def client_tls():
    """TLS context for clients: the test certificate is self-signed."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def queued_qid(text):
    """The queue ID in a '250 2.0.0 Ok: queued as QID' reply, or None."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    m = re.search(r"queued as ([0-9A-Za-z]+)", text)
    return m.group(1) if m else None


def after_received(stored):
    """What follows our Received header (and its folded lines) in a stored
    message: exactly what the client sent."""
    assert stored.startswith(b"Received: "), stored[:80]
    i = stored.index(b"\r\n") + 2
    while stored[i:i + 1] in (b" ", b"\t"):
        i = stored.index(b"\r\n", i) + 2
    return stored[i:]


def message(subject, body=b"Hello.\r\n", sender="user@example.com",
            to="rcpt@example.net", extra=b""):
    """A small RFC 5322 message with CRLF line ends (as it goes on the wire
    after dot-unstuffing)."""
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n" % (sender, to, subject)).encode()
    return head + extra + b"\r\n" + body


def wait_dpdk_start(proc, log, timeout=30):
    """Waits until log() shows that a relay on DPDK (proc) started; raises
    with the log if it exits first or does not start within timeout s."""
    deadline = time.monotonic() + timeout
    while not re.search(r"event=start .*io=dpdk", log()):
        if proc.poll() is not None:
            raise RuntimeError("vmrelay exited with %d:\n%s" % (proc.returncode, log()))
        if time.monotonic() > deadline:
            raise RuntimeError("vmrelay did not start:\n" + log())
        time.sleep(0.05)


class Relay:
    """A vmrelay process with its own directory, ports and spool."""

    def __init__(self, smtp=None, workers=2, tls=True, accounts=None, spool_dir=None,
                 listen_v6=False, limits=None, relay_keys=None, delivery=None):
        self.dir = tempfile.mkdtemp(prefix="vr-e2e-")
        # world-searchable, so a test can let another user reach the control socket
        os.chmod(self.dir, 0o711)
        self.port = self.port6 = self.tls_port = None   # known once started (port 0)
        self.spool_dir = spool_dir or os.path.join(self.dir, "spool")
        self.accounts_path = os.path.join(self.dir, "accounts.jsonl")
        self.config_path = os.path.join(self.dir, "relay.ini")
        self.log_path = os.path.join(self.dir, "relay.log")
        self.ctl_path = os.path.join(self.dir, "ctl.sock")
        self.proc = None
        self.write_accounts(ACCOUNTS if accounts is None else accounts)
        listen = ["127.0.0.1:0"]
        if listen_v6:
            listen.append("[::1]:0")
        if tls:
            listen.append("127.0.0.1:0 tls=implicit")
        lines = ["[relay]", "hostname = " + HOSTNAME, "listen = " + ", ".join(listen),
                 "spool_dir = " + self.spool_dir, "accounts = " + self.accounts_path,
                 "control_socket = " + self.ctl_path, "log_level = info"]
        lines += ["%s = %s" % kv for kv in (relay_keys or {}).items()]
        lines += ["", "[io]", "mode = kernel", "workers = %d" % workers,
                 "", "[smtp]"]
        lines += ["%s = %s" % kv for kv in (smtp or {}).items()]
        lines += ["", "[limits]"] + ["%s = %s" % kv
                                     for kv in (LIMITS if limits is None else limits).items()]
        if tls:
            cert, key = test_cert()
            lines += ["", "[tls]", "cert = " + cert, "key = " + key]
        # Mail must never leave loopback (no DNS, no real MX): unless the test
        # routes it, it goes to a closed local port and waits for a retry.
        lines += ["", "[delivery]"] + ["%s = %s" % kv for kv in
                                       (delivery or {"smarthost": "127.0.0.1:1"}).items()]
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def write_accounts(self, accounts):
        with open(self.accounts_path, "w") as f:
            for a in accounts:
                f.write(json.dumps(a) + "\n")

    # --- process ---

    def start(self, timeout=10):
        """Starts the relay and returns once it logged event=start (its
        listeners are bound by then). The first start binds free ports (port
        0) and learns them from that line; the configuration is then pinned
        to them, so a restart listens where clients expect it."""
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([VMRELAY, "-c", self.config_path, "--io", "kernel"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(r'event=start .*listen="([^"]*)"', self.log(offset))
            if m:
                self._learn_ports(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("vmrelay exited with %d:\n%s"
                                   % (self.proc.returncode, self.log(offset)))
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("vmrelay did not start within %ds:\n%s" % (timeout, self.log(offset)))

    def _learn_ports(self, listen):
        for item in listen.split(","):
            port = int(re.match(r"(?:\[[^]]*\]|[^:]*):(\d+)", item).group(1))
            if item.endswith("tls=implicit"):
                self.tls_port = port
            elif item.startswith("["):
                self.port6 = port
            else:
                self.port = port
        with open(self.config_path) as f:
            text = f.read()
        with open(self.config_path, "w") as f:
            f.write(re.sub(r"(?m)^listen = .*$", "listen = " + listen, text))

    def stop(self, timeout=15):
        """SIGTERM and wait; returns the exit status."""
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("vmrelay did not stop within %ds after SIGTERM" % timeout)

    def kill(self):
        """SIGKILL: a crash, nothing flushed."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def cleanup(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.cleanup()

    def log(self, offset=0):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, pattern, timeout=5, offset=0):
        """Waits until the log matches the regex; returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            m = re.search(pattern, self.log(offset))
            if m or time.monotonic() > deadline:
                return m
            time.sleep(0.02)

    # --- spool, through vmrelay-spool ---

    def spool(self, *args, check=True):
        return subprocess.run([SPOOL_TOOL, self.spool_dir] + list(args), check=check,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)

    def queue(self):
        """The queued messages, {qid: record} from vmrelay-spool --json."""
        out = subprocess.run([SPOOL_TOOL, "--json", self.spool_dir], check=True,
                             stdout=subprocess.PIPE, timeout=60).stdout.decode()
        recs = [json.loads(line) for line in out.splitlines() if line.strip()]
        return {r["qid"]: r for r in recs}

    def stored(self, qid):
        """A queued message as it will be delivered (vmrelay-spool show):
        the message bytes, starting with our Received header."""
        out = self.spool("show", qid).stdout
        i = out.find(b"Received: ")
        assert i >= 0, "no Received header in show %s: %r" % (qid, out[:300])
        return out[i:]

    def body_of(self, qid):
        return after_received(self.stored(qid))

    # --- clients ---

    def ctl(self, *args, human=False, user=None, group="nogroup", timeout=30):
        """Runs vmrelayctl against this relay's control socket (as user and
        group, via setpriv, if user is given); returns the CompletedProcess
        (text)."""
        cmd = [VMRELAYCTL, "-s", self.ctl_path] + (["--human"] if human else []) + list(args)
        if user:
            cmd = ["setpriv", "--reuid=" + user, "--regid=" + group, "--clear-groups"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def connect(self, source=None, port=None, tls=False, timeout=10):
        return Client(("127.0.0.1", port or (self.tls_port if tls else self.port)),
                      source=source, implicit_tls=tls, timeout=timeout)


class Client:
    """A raw SMTP client: send exact bytes, read whole replies."""

    def __init__(self, addr, source=None, implicit_tls=False, timeout=10):
        self.sock = socket.create_connection(addr, timeout=timeout,
                                             source_address=(source, 0) if source else None)
        if implicit_tls:
            self.sock = client_tls().wrap_socket(self.sock)
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def reply(self):
        """(code, text of all lines joined by newlines)."""
        lines = [self._line()]
        while len(lines[-1]) >= 4 and lines[-1][3] == "-":
            lines.append(self._line())
        return int(lines[-1][:3]), "\n".join(lines)

    def expect(self, code, data=None):
        """Sends data (if any) and asserts the reply code; returns the text."""
        if data is not None:
            self.send(data)
        got, text = self.reply()
        if got != code:
            raise AssertionError("sent %r: wanted %d, got %r" % (data, code, text))
        return text

    def closed(self, timeout=5):
        """True if the server closed the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def starttls(self):
        self.sock = client_tls().wrap_socket(self.sock)

    def hello(self, name="client.example.com"):
        self.expect(220)
        return self.expect(250, "EHLO %s\r\n" % name)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
