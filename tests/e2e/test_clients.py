"""Real clients (Python smtplib, swaks, a raw socket for BDAT) send through a
running relay; each message must sit in the spool byte for byte: what
follows our Received header is exactly what the client sent.

Covers plain SMTP, STARTTLS, implicit TLS, AUTH PLAIN and LOGIN after
STARTTLS from an unregistered address, PIPELINING, BDAT, 8-bit and SMTPUTF8.
"""

import smtplib
import subprocess
import tempfile
import unittest

import relay
from relay import OUTSIDER, TOKEN, Relay, client_tls, message, queued_qid


class ClientsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(listen_v6=True).start()

    @classmethod
    def tearDownClass(cls):
        status = cls.relay.stop()
        cls.relay.cleanup()
        assert status == 0, "vmrelay exited with %r on SIGTERM" % status

    def assertQueued(self, qid, sent, account="vps1", sender="user@example.com",
                     rcpts=("rcpt@example.net",), auth=False, tls=False, utf8=False,
                     eightbit=False):
        """qid is in the spool with this body and envelope."""
        self.assertIsNotNone(qid, "no queue ID in the final reply")
        queue = self.relay.queue()
        self.assertIn(qid, queue)
        rec = queue[qid]
        self.assertEqual(rec["account"], account)
        self.assertEqual(rec["sender"], sender)
        self.assertEqual(rec["recipients"], list(rcpts))
        flags = {"tls": tls or auth, "auth": auth, "smtputf8": utf8, "8bitmime": eightbit}
        self.assertEqual(sorted(rec["flags"]), sorted(f for f, on in flags.items() if on))
        stored = self.relay.stored(qid)
        body = relay.after_received(stored)
        received = stored[:len(stored) - len(body)]
        self.assertIn(b"by " + relay.HOSTNAME.encode(), received)
        self.assertIn(("id " + qid).encode(), received)
        # RFC 3848 protocol names: ESMTP, ESMTPS, ESMTPSA, UTF8SMTPS, ...
        proto = ("UTF8SMTP" if utf8 else "ESMTP") + ("S" if tls or auth else "") \
            + ("A" if auth else "")
        self.assertRegex(received, rb"\swith " + proto.encode() + rb"\s", received)
        self.assertEqual(body, sent)

    # --- smtplib ---

    def smtplib_send(self, s, msg, sender="user@example.com", rcpts=("rcpt@example.net",),
                     mail_options=()):
        code, _ = s.mail(sender, list(mail_options))
        self.assertEqual(code, 250)
        for r in rcpts:
            self.assertEqual(s.rcpt(r)[0], 250)
        code, text = s.data(msg)
        self.assertEqual(code, 250, text)
        return queued_qid(text)

    def test_smtplib_plain(self):
        msg = message("plain", b"Line one.\r\n.dot at start\r\n..two dots\r\n.\r\nend\r\n")
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            self.assertTrue(s.has_extn("pipelining"))
            self.assertTrue(s.has_extn("starttls"))
            self.assertFalse(s.has_extn("auth"), "AUTH offered before TLS")
            qid = self.smtplib_send(s, msg, rcpts=["a@example.net", "b@example.org"])
        self.assertQueued(qid, msg, sender="user@example.com",
                          rcpts=["a@example.net", "b@example.org"])

    def test_smtplib_ipv6(self):
        """vps1 is registered by ::1 (its /64) too."""
        msg = message("over IPv6")
        try:
            s = smtplib.SMTP("::1", self.relay.port6, timeout=10)
        except OSError as e:
            self.skipTest("no IPv6 loopback: %s" % e)
        with s:
            s.ehlo("vps1.example.com")
            qid = self.smtplib_send(s, msg)
        self.assertQueued(qid, msg)
        self.assertEqual(self.relay.queue()[qid]["client"], "::1")

    def test_smtplib_several_messages_one_session(self):
        sent = {}
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            for i in range(5):
                msg = message("number %d" % i, (b"x" * i * 100) + b"\r\n")
                sent[self.smtplib_send(s, msg)] = msg
        self.assertEqual(len(sent), 5, "queue IDs repeat")
        for qid, msg in sent.items():
            self.assertQueued(qid, msg)

    def test_smtplib_large_message(self):
        # Nearly 3 MiB of varied lines: several spool body chunks.
        lines = [(b"%06d " % i) + bytes(range(0x21, 0x7f)) * ((i % 9) + 1) for i in range(6000)]
        msg = message("large", b"\r\n".join(lines) + b"\r\n")
        self.assertGreater(len(msg), 2 << 20)
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=30) as s:
            s.ehlo("vps1.example.com")
            qid = self.smtplib_send(s, msg)
        self.assertQueued(qid, msg)

    def test_smtplib_starttls(self):
        msg = message("starttls")
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            s.starttls(context=client_tls())
            s.ehlo("vps1.example.com")
            self.assertFalse(s.has_extn("starttls"), "STARTTLS offered under TLS")
            self.assertTrue(s.has_extn("auth"))
            qid = self.smtplib_send(s, msg)
        self.assertQueued(qid, msg, tls=True)

    def test_smtplib_implicit_tls(self):
        msg = message("implicit tls")
        with smtplib.SMTP_SSL("127.0.0.1", self.relay.tls_port, timeout=10,
                              context=client_tls()) as s:
            s.ehlo("vps1.example.com")
            qid = self.smtplib_send(s, msg)
        self.assertQueued(qid, msg, tls=True)

    def auth_send(self, mechanism):
        msg = message("auth " + mechanism, sender="user@example.org")
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10,
                          source_address=(OUTSIDER, 0)) as s:
            s.ehlo("vps2.example.org")
            s.starttls(context=client_tls())
            s.ehlo("vps2.example.org")
            s.user, s.password = "vps2", TOKEN
            code, text = s.auth(mechanism, getattr(s, "auth_" + mechanism.lower()),
                                initial_response_ok=mechanism == "PLAIN")
            self.assertEqual(code, 235, text)
            qid = self.smtplib_send(s, msg, sender="user@example.org")
        self.assertQueued(qid, msg, account="vps2", sender="user@example.org", auth=True)

    def test_auth_plain_after_starttls(self):
        self.auth_send("PLAIN")

    def test_auth_login_after_starttls(self):
        self.auth_send("LOGIN")

    def test_smtplib_8bitmime(self):
        body = "Grüße aus Köln, ½ € — naïve café.\r\n".encode("utf-8") \
            + bytes(range(0x80, 0x100)) + b"\r\n"
        msg = message("8bit", body, extra=b"Content-Transfer-Encoding: 8bit\r\n")
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            self.assertTrue(s.has_extn("8bitmime"))
            qid = self.smtplib_send(s, msg, mail_options=["BODY=8BITMIME"])
        self.assertQueued(qid, msg, eightbit=True)

    def test_smtplib_smtputf8(self):
        sender, rcpt = "jürgen@example.com", "josé.ñandú@example.net"
        msg = message("utf8", "Ünïcödé body ✓\r\n".encode("utf-8"), sender=sender, to=rcpt)
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            self.assertTrue(s.has_extn("smtputf8"))
            qid = self.smtplib_send(s, msg, sender=sender, rcpts=[rcpt],
                                    mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        self.assertQueued(qid, msg, sender=sender, rcpts=[rcpt], utf8=True, eightbit=True)

    def test_utf8_address_without_smtputf8_refused(self):
        with self.relay.connect() as c:
            c.hello()
            c.expect(553, "MAIL FROM:<jürgen@example.com>\r\n".encode("utf-8"))

    # --- raw socket ---

    def test_bdat(self):
        """CHUNKING: chunks are taken verbatim (no dot-stuffing), LAST commits."""
        msg = message("bdat", b".not stuffed\r\n..still two dots\r\n" + b"y" * 70000 + b"\r\n")
        parts = [msg[:10], msg[10:50000], msg[50000:]]
        with self.relay.connect() as c:
            self.assertIn("CHUNKING", c.hello())
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
            for p in parts[:-1]:
                text = c.expect(250, b"BDAT %d\r\n" % len(p) + p)
                self.assertIn("%d octets" % len(p), text)
            # The last chunk pipelined with QUIT: the 250 comes after the commit.
            c.send(b"BDAT %d LAST\r\n" % len(parts[-1]) + parts[-1] + b"QUIT\r\n")
            qid = queued_qid(c.expect(250))
            c.expect(221)
        self.assertQueued(qid, msg)

    def test_bdat_zero_last(self):
        msg = message("bdat zero last")
        with self.relay.connect() as c:
            c.hello()
            c.send(b"MAIL FROM:<user@example.com>\r\nRCPT TO:<rcpt@example.net>\r\n"
                   + b"BDAT %d\r\n" % len(msg) + msg + b"BDAT 0 LAST\r\n")
            c.expect(250)
            c.expect(250)
            c.expect(250)
            qid = queued_qid(c.expect(250))
        self.assertQueued(qid, msg)

    def test_pipelining_raw_one_write(self):
        """Every command of a transaction in one write, twice over."""
        msgs = [message("pipe %d" % i) for i in range(2)]
        wire = b""
        for m in msgs:
            wire += (b"MAIL FROM:<user@example.com>\r\nRCPT TO:<a@example.net>\r\n"
                     b"RCPT TO:<b@example.net>\r\nDATA\r\n" + m + b".\r\n")
        with self.relay.connect() as c:
            c.hello()
            c.send(wire + b"QUIT\r\n")
            qids = []
            for _ in msgs:
                for code in (250, 250, 250, 354):
                    c.expect(code)
                qids.append(queued_qid(c.expect(250)))
            c.expect(221)
        for qid, m in zip(qids, msgs):
            self.assertQueued(qid, m, rcpts=["a@example.net", "b@example.net"])

    # --- swaks ---

    def swaks(self, msg, *args, source=None):
        """Sends msg with swaks; returns its transcript. swaks puts CRLF . CRLF
        after the data, so the file holds msg without its last CRLF."""
        assert msg.endswith(b"\r\n")
        with tempfile.NamedTemporaryFile(suffix=".eml") as f:
            f.write(msg[:-2])
            f.flush()
            cmd = ["swaks", "--server", "127.0.0.1", "--data", "@" + f.name,
                   "--timeout", "20"] + list(args)
            if source:
                cmd += ["--local-interface", source]
            p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=60)
        out = p.stdout.decode("utf-8", "replace")
        self.assertEqual(p.returncode, 0, out)
        return out

    def test_swaks_plain(self):
        msg = message("swaks plain", b"from swaks\r\n.leading dot\r\n")
        out = self.swaks(msg, "--port", str(self.relay.port), "--ehlo", "vps1.example.com",
                         "--from", "user@example.com", "--to", "rcpt@example.net")
        self.assertQueued(queued_qid(out), msg)

    def test_swaks_pipelining(self):
        msg = message("swaks pipeline")
        out = self.swaks(msg, "--port", str(self.relay.port), "--pipeline",
                         "--from", "user@example.com", "--to", "a@example.net,b@example.net")
        self.assertIn("PIPELINING", out)
        self.assertQueued(queued_qid(out), msg, rcpts=["a@example.net", "b@example.net"])

    def test_swaks_starttls_auth_plain(self):
        msg = message("swaks auth", sender="user@example.org")
        out = self.swaks(msg, "--port", str(self.relay.port), "--tls", "--auth", "PLAIN",
                         "--auth-user", "vps2", "--auth-password", TOKEN,
                         "--from", "user@example.org", "--to", "rcpt@example.net",
                         source=OUTSIDER)
        self.assertIn("235 2.7.0", out)
        self.assertNotIn(TOKEN, self.relay.log(), "the token reached the log")
        self.assertQueued(queued_qid(out), msg, account="vps2", sender="user@example.org",
                          auth=True)

    def test_swaks_starttls_auth_login(self):
        msg = message("swaks auth login", sender="user@example.org")
        out = self.swaks(msg, "--port", str(self.relay.port), "--tls", "--auth", "LOGIN",
                         "--auth-user", "vps2", "--auth-password", TOKEN,
                         "--from", "user@example.org", "--to", "rcpt@example.net",
                         source=OUTSIDER)
        self.assertQueued(queued_qid(out), msg, account="vps2", sender="user@example.org",
                          auth=True)

    def test_swaks_implicit_tls(self):
        msg = message("swaks tls on connect")
        out = self.swaks(msg, "--port", str(self.relay.tls_port), "--tls-on-connect",
                         "--from", "user@example.com", "--to", "rcpt@example.net")
        self.assertQueued(queued_qid(out), msg, tls=True)


if __name__ == "__main__":
    unittest.main()
