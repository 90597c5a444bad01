"""The outbound SMTP client (engine/delivery/smtpc*) against real servers on
loopback, through vmrelay-send (the client on a socket in an epoll loop):

- aiosmtpd with a handler that records what it got: bodies byte for byte
  (dot-stuffing undone by the server, a final CRLF added when missing, 8-bit
  and a 3 MB body through backpressure), STARTTLS with a self-signed
  certificate, DANE-EE against that certificate's key, SMTPUTF8 present and
  absent;
- Postfix's smtp-sink with -r/-f/-q injecting 4xx, 5xx and a dropped
  connection at each step;
- small scripted servers for what no real server does on purpose: replies
  withheld until DATA (only a pipelining client gets through), a server
  without PIPELINING checking that the client waits, a reply injected
  behind the STARTTLS 220, a server that never greets.

Every server listens on 127.0.0.1 on a port chosen here and is stopped by
the test that started it.
"""

import hashlib
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

import relay

SEND = os.path.join(relay.BUILD, "engine", "delivery", "vmrelay-send")
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

try:
    from aiosmtpd.controller import Controller
except ImportError:          # pragma: no cover - the deps script installs it
    Controller = None

# aiosmtpd logs the handshakes the DANE test makes fail on purpose.
logging.getLogger("mail.log").setLevel(logging.CRITICAL)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(port, body, to=("rcpt@dest.test",), sender="vps@example.com", args=(),
         timeout=30, server="127.0.0.1"):
    """Runs vmrelay-send; returns (exit status, [msg events], closed event)."""
    with tempfile.NamedTemporaryFile(prefix="vr-smtpc-", suffix=".eml") as f:
        f.write(body)
        f.flush()
        cmd = [SEND, "--server", "%s:%d" % (server, port), "--from", sender]
        for r in to:
            cmd += ["--to", r]
        p = subprocess.run(cmd + list(args) + [f.name], capture_output=True,
                           timeout=timeout)
    err = p.stderr.decode(errors="replace")
    # Under -Db_sanitize=address,undefined a finding must fail the test even
    # where a failing exit status is the expected outcome.
    if "Sanitizer" in err or "runtime error" in err:
        raise AssertionError("vmrelay-send: " + err)
    events = [json.loads(line) for line in p.stdout.decode().splitlines()]
    msgs = [e for e in events if e["event"] == "msg"]
    closed = [e for e in events if e["event"] == "closed"]
    return p.returncode, msgs, closed[-1] if closed else None


class Recorder:
    """aiosmtpd handler keeping every message as received."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append({
            "from": envelope.mail_from, "to": list(envelope.rcpt_tos),
            "options": list(envelope.mail_options), "content": envelope.content,
            "tls": session.ssl is not None})
        return "250 2.0.0 recorded"


class Aiosmtpd:
    def __init__(self, **kwargs):
        self.handler = Recorder()
        self.port = free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False, **kwargs)

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()


class Sink:
    """smtp-sink on a port of its own; extra arguments inject failures."""

    def __init__(self, *args):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", "-c"] + list(args) + ["127.0.0.1:%d" % self.port, "10"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("smtp-sink did not start")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


class Scripted(threading.Thread):
    """A one-connection server running script(conn) in a thread; whatever
    the script asserts comes back as self.error."""

    def __init__(self, script):
        super().__init__(daemon=True)
        self.script = script
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.error = None
        self.seen = []

    def run(self):
        try:
            conn, _ = self.sock.accept()
            conn.settimeout(10)
            with conn:
                self.script(self, conn)
        except Exception as e:       # reported by the test
            self.error = e

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        self.join(5)


def read_until(conn, marker, buf=b""):
    while marker not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            raise EOFError("client closed; had %r" % buf)
        buf += chunk
    return buf


@unittest.skipUnless(os.path.exists(SEND), "vmrelay-send not built")
class ByteExact(unittest.TestCase):
    @unittest.skipUnless(Controller, "aiosmtpd missing")
    def test_bodies_arrive_byte_for_byte(self):
        bodies = [
            # Lines that start with dots must be stuffed on the wire and
            # arrive as they were.
            (b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nmid.dle\r\n",
             b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nmid.dle\r\n"),
            # A body stored without its final CRLF (received by BDAT) gets one.
            (b"Subject: no end\r\n\r\nlast line", b"Subject: no end\r\n\r\nlast line\r\n"),
            # 8-bit, long lines, an empty line at the end.
            (b"Subject: 8bit\r\n\r\n" + bytes(range(0x80, 0x100)) + b"\r\n" + b"x" * 990 +
             b"\r\n\r\n",
             b"Subject: 8bit\r\n\r\n" + bytes(range(0x80, 0x100)) + b"\r\n" + b"x" * 990 +
             b"\r\n\r\n"),
        ]
        with Aiosmtpd() as srv:
            for body, want in bodies:
                rc, msgs, closed = send(srv.port, body, args=["--8bit", "--size", str(len(body))])
                self.assertEqual(rc, 0, msgs)
                self.assertEqual(msgs[0]["status"], "sent")
            got = srv.handler.messages
        self.assertEqual([m["content"] for m in got], [w for _, w in bodies])
        self.assertIn("BODY=8BITMIME", got[2]["options"])
        self.assertEqual(got[0]["from"], "vps@example.com")
        self.assertEqual(got[0]["to"], ["rcpt@dest.test"])
        self.assertEqual(closed["reply"]["code"], 221)

    @unittest.skipUnless(Controller and socket.has_ipv6, "aiosmtpd or IPv6 missing")
    def test_ipv6(self):
        srv = Aiosmtpd()
        srv.controller.hostname = "::1"
        with srv:
            rc, msgs, closed = send(srv.port, b"Subject: v6\r\n\r\nx\r\n", server="[::1]")
            got = srv.handler.messages
        self.assertEqual(rc, 0, msgs)
        self.assertEqual(closed["peer"], "[::1]:%d" % srv.port)
        self.assertEqual(got[0]["content"], b"Subject: v6\r\n\r\nx\r\n")

    @unittest.skipUnless(Controller, "aiosmtpd missing")
    def test_large_body_and_reuse(self):
        line = b"y" * 76 + b"\r\n"
        body = b"Subject: big\r\n\r\n" + line * (3 * 1024 * 1024 // len(line))
        with Aiosmtpd(data_size_limit=64 * 1024 * 1024) as srv:
            rc, msgs, closed = send(srv.port, body, to=["a@dest.test", "b@dest.test"],
                                    args=["--count", "3"], timeout=60)
            got = srv.handler.messages
        self.assertEqual(rc, 0)
        self.assertEqual([m["status"] for m in msgs], ["sent"] * 3)
        # Three messages over one connection, each whole.
        self.assertEqual(closed["msgs"], 3)
        self.assertEqual(len(got), 3)
        for m in got:
            self.assertEqual(hashlib.sha256(m["content"]).hexdigest(),
                             hashlib.sha256(body).hexdigest())
            self.assertEqual(m["to"], ["a@dest.test", "b@dest.test"])


@unittest.skipUnless(os.path.exists(SEND) and Controller, "vmrelay-send or aiosmtpd missing")
class Tls(unittest.TestCase):
    def context(self):
        cert, key = relay.test_cert()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return ctx, cert

    def spki_sha256(self, cert):
        pub = subprocess.run(["openssl", "x509", "-in", cert, "-noout", "-pubkey"],
                             capture_output=True, check=True).stdout
        der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                             capture_output=True, check=True).stdout
        return hashlib.sha256(der).hexdigest()

    def test_starttls_self_signed(self):
        ctx, _ = self.context()
        with Aiosmtpd(tls_context=ctx) as srv:
            rc, msgs, closed = send(srv.port, b"Subject: tls\r\n\r\nsecret\r\n",
                                    args=["--tls", "may"])
            got = srv.handler.messages
        self.assertEqual(rc, 0, msgs)
        self.assertTrue(closed["tls"].startswith("TLSv1."))
        self.assertTrue(closed["cipher"])
        self.assertFalse(closed["verified"])
        self.assertTrue(got[0]["tls"])
        self.assertEqual(got[0]["content"], b"Subject: tls\r\n\r\nsecret\r\n")

    def test_starttls_large_body(self):
        ctx, _ = self.context()
        body = b"Subject: big tls\r\n\r\n" + (b".dot" + b"t" * 70 + b"\r\n") * 30000
        with Aiosmtpd(tls_context=ctx) as srv:
            rc, msgs, closed = send(srv.port, body, args=["--tls", "may", "--count", "2"],
                                    timeout=60)
            got = srv.handler.messages
        self.assertEqual(rc, 0, msgs)
        self.assertTrue(closed["tls"])
        self.assertEqual(closed["msgs"], 2)
        self.assertEqual([m["content"] == body for m in got], [True, True])

    def test_dane_ee(self):
        ctx, cert = self.context()
        good = self.spki_sha256(cert)
        bad = ("0" if good[0] != "0" else "1") + good[1:]
        with Aiosmtpd(tls_context=ctx) as srv:
            rc, msgs, closed = send(srv.port, b"Subject: dane\r\n\r\nx\r\n",
                                    args=["--tls", "dane", "--peer-name", "mx.dest.test",
                                          "--tlsa", "3 1 1 " + good])
            self.assertEqual(rc, 0, msgs)
            self.assertTrue(closed["verified"])
            # A key that matches no record: a temporary failure, nothing sent.
            rc, msgs, closed = send(srv.port, b"Subject: dane\r\n\r\nx\r\n",
                                    args=["--tls", "dane", "--peer-name", "mx.dest.test",
                                          "--tlsa", "3 1 1 " + bad])
            got = srv.handler.messages
        self.assertEqual(rc, 1)
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(closed["reply"]["enh"], "4.7.5")
        self.assertIn("TLSA", closed["reply"]["text"])
        self.assertEqual(len(got), 1)

    def test_dane_without_starttls(self):
        with Aiosmtpd() as srv:
            rc, msgs, closed = send(srv.port, b"x\r\n",
                                    args=["--tls", "dane", "--tlsa", "3 1 1 " + "00" * 32])
            got = srv.handler.messages
        self.assertEqual(rc, 1)
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(closed["reply"]["enh"], "4.7.10")
        self.assertEqual(got, [])


@unittest.skipUnless(os.path.exists(SEND) and Controller, "vmrelay-send or aiosmtpd missing")
class Smtputf8(unittest.TestCase):
    BODY = "Subject: utf8\r\n\r\nh\u00e9\r\n".encode()

    def test_sent_when_offered(self):
        with Aiosmtpd(enable_SMTPUTF8=True) as srv:
            rc, msgs, _ = send(srv.port, self.BODY, to=["j\u00f6rg@dest.test"])
            got = srv.handler.messages
        self.assertEqual(rc, 0, msgs)
        self.assertIn("SMTPUTF8", got[0]["options"])
        self.assertEqual(got[0]["to"], ["j\u00f6rg@dest.test"])

    def test_refused_without(self):
        with Aiosmtpd(enable_SMTPUTF8=False) as srv:
            rc, msgs, _ = send(srv.port, self.BODY, to=["j\u00f6rg@dest.test"])
            got = srv.handler.messages
        self.assertEqual(rc, 1)
        self.assertEqual(msgs[0]["status"], "bounced")
        r = msgs[0]["rcpts"][0]
        self.assertEqual((r["code"], r["enh"], r["local"]), (550, "5.6.7", True))
        self.assertIn("SMTPUTF8 is required", r["text"])
        self.assertEqual(got, [])


@unittest.skipUnless(os.path.exists(SEND) and os.path.exists(SMTP_SINK),
                     "vmrelay-send or smtp-sink missing")
class Failures(unittest.TestCase):
    def run_sink(self, *sink_args):
        with Sink(*sink_args) as sink:
            return send(sink.port, b"Subject: f\r\n\r\nbody\r\n", to=["a@dest.test"])

    def test_rcpt_4xx_defers(self):
        rc, msgs, closed = self.run_sink("-r", "rcpt")
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(msgs[0]["rcpts"][0]["code"] // 100, 4)
        self.assertFalse(msgs[0]["rcpts"][0]["local"])
        self.assertEqual(closed["reply"]["code"], 221)   # the connection was fine

    def test_mail_5xx_bounces(self):
        rc, msgs, _ = self.run_sink("-f", "mail")
        self.assertEqual(msgs[0]["status"], "bounced")
        self.assertEqual(msgs[0]["rcpts"][0]["code"] // 100, 5)

    def test_end_of_data_5xx_bounces(self):
        rc, msgs, _ = self.run_sink("-f", ".")
        self.assertEqual(msgs[0]["status"], "bounced")
        self.assertEqual(msgs[0]["reply"]["code"] // 100, 5)

    def test_ehlo_5xx_falls_back_to_helo(self):
        rc, msgs, closed = self.run_sink("-f", "ehlo")
        self.assertEqual(rc, 0, msgs)
        self.assertNotIn("ESMTP", closed["caps"])

    def test_dropped_after_data(self):
        rc, msgs, closed = self.run_sink("-q", "data")
        self.assertEqual(msgs[0]["status"], "deferred")
        r = msgs[0]["rcpts"][0]
        self.assertTrue(r["local"])
        self.assertIn("lost connection with [127.0.0.1]:", r["text"])
        self.assertIn("while sending DATA command", r["text"])

    def test_end_of_data_4xx_defers(self):
        rc, msgs, _ = self.run_sink("-r", ".")
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(msgs[0]["reply"]["code"] // 100, 4)
        self.assertFalse(msgs[0]["reply"]["local"])

    def test_max_msgs_opens_new_connections(self):
        with Sink() as sink:
            rc, msgs, closed = send(sink.port, b"x\r\n", args=["--count", "5", "--max-msgs", "2"])
        self.assertEqual(rc, 0)
        self.assertEqual(len(msgs), 5)
        self.assertEqual(closed["msgs"], 1)           # the third connection's one

    def test_connect_refused(self):
        rc, msgs, closed = send(free_port(), b"x\r\n")
        self.assertEqual(rc, 1)
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(msgs[0]["rcpts"][0]["enh"], "4.4.1")
        self.assertEqual(closed["reply"]["enh"], "4.4.1")
        self.assertIn("Connection refused", closed["reply"]["text"])


@unittest.skipUnless(os.path.exists(SEND), "vmrelay-send not built")
class Scripts(unittest.TestCase):
    def test_pipelining_visible(self):
        """Replies are withheld until DATA arrives: a client that waited for
        the MAIL reply would stall here and time out."""
        def script(self, conn):
            conn.sendall(b"220 scripted\r\n")
            read_until(conn, b"\r\n")
            conn.sendall(b"250-scripted\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            buf = read_until(conn, b"DATA\r\n")
            self.seen.append(buf)
            conn.sendall(b"250 ok\r\n250 ok\r\n250 ok\r\n354 go\r\n")
            buf = read_until(conn, b"\r\n.\r\n")
            conn.sendall(b"250 done\r\n")
            read_until(conn, b"QUIT\r\n")
            conn.sendall(b"221 bye\r\n")

        with Scripted(script) as srv:
            rc, msgs, _ = send(srv.port, b"x\r\n", to=["a@dest.test", "b@dest.test"],
                               args=["--timeout-ms", "3000"])
        self.assertIsNone(srv.error)
        self.assertEqual(rc, 0, msgs)
        self.assertEqual(srv.seen[0], b"MAIL FROM:<vps@example.com>\r\nRCPT TO:<a@dest.test>\r\n"
                                      b"RCPT TO:<b@dest.test>\r\nDATA\r\n")

    def test_no_pipelining_waits(self):
        """Without PIPELINING the client sends nothing after MAIL until its
        reply came."""
        def script(self, conn):
            conn.sendall(b"220 scripted\r\n")
            read_until(conn, b"\r\n")
            conn.sendall(b"250 scripted\r\n")
            buf = read_until(conn, b"\r\n")
            conn.settimeout(0.5)
            try:
                more = conn.recv(100)
            except socket.timeout:
                more = b""
            conn.settimeout(10)
            self.seen.append((buf, more))
            conn.sendall(b"451 4.3.0 not now\r\n")
            read_until(conn, b"QUIT\r\n")
            conn.sendall(b"221 bye\r\n")

        with Scripted(script) as srv:
            rc, msgs, _ = send(srv.port, b"x\r\n", args=["--timeout-ms", "3000"])
        self.assertIsNone(srv.error)
        self.assertEqual(srv.seen[0], (b"MAIL FROM:<vps@example.com>\r\n", b""))
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(msgs[0]["rcpts"][0]["text"], "4.3.0 not now")

    def test_starttls_response_injection(self):
        def script(self, conn):
            conn.sendall(b"220 scripted\r\n")
            read_until(conn, b"\r\n")
            conn.sendall(b"250-scripted\r\n250 STARTTLS\r\n")
            read_until(conn, b"STARTTLS\r\n")
            conn.sendall(b"220 go ahead\r\n250-injected\r\n250 PIPELINING\r\n")
            conn.settimeout(2)
            self.seen.append(conn.recv(100))

        with Scripted(script) as srv:
            rc, msgs, closed = send(srv.port, b"x\r\n", args=["--tls", "may"])
        self.assertIsNone(srv.error)
        self.assertEqual(srv.seen, [b""])             # dropped, no ClientHello
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertEqual(closed["reply"]["enh"], "4.7.0")
        self.assertIn("CVE-2011-0411", closed["reply"]["text"])

    def test_greeting_timeout(self):
        def script(self, conn):
            conn.settimeout(5)
            self.seen.append(conn.recv(100))

        with Scripted(script) as srv:
            t0 = time.monotonic()
            rc, msgs, closed = send(srv.port, b"x\r\n", args=["--timeout-ms", "400"])
            elapsed = time.monotonic() - t0
        self.assertEqual(msgs[0]["status"], "deferred")
        self.assertIn("timed out while receiving the initial server greeting",
                      closed["reply"]["text"])
        self.assertLess(elapsed, 3)
        self.assertEqual(srv.seen, [b""])


if __name__ == "__main__":
    unittest.main()
