"""Never an open relay; no SMTP smuggling; no STARTTLS command injection.

Every case checks what an attacker would want to see happen did not: no
queued message, no reply to an injected command, the connection closed.
"""

import smtplib
import subprocess
import unittest

from relay import OUTSIDER, Relay, TOKEN, client_tls

RELAY_DENIED = "550 5.7.1 relay access denied: %s is not a registered VPS" % OUTSIDER

# Endings a lenient server might take for <CRLF>.<CRLF>; only that ends DATA.
SMUGGLING = [
    b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n.\r\r\n",
    b"\n.\r", b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\r\n.\r\r\n", b"\n\n.\n\n",
]


class SecurityTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(smtp={"max_errors": 50}).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.stop()
        cls.relay.cleanup()

    def queued(self):
        return set(self.relay.queue())

    # --- open relay ---

    def test_unregistered_client_denied(self):
        before = self.queued()
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10,
                          source_address=(OUTSIDER, 0)) as s:
            s.ehlo("stranger.example")
            code, text = s.mail("user@example.com")
            self.assertEqual(code, 550)
            self.assertIn(RELAY_DENIED, "%d %s" % (code, text.decode()))
            # No path to a recipient without an account, whatever comes next.
            self.assertEqual(s.rcpt("rcpt@example.net")[0], 503)
            self.assertIn(s.docmd("DATA")[0], (503, 554))
        self.assertEqual(self.queued(), before)
        self.assertIsNotNone(self.relay.wait_log(
            r"event=refused client=127\.0\.0\.2 reason=relay reply=\"550 5\.7\.1"))

    def test_unregistered_client_denied_swaks(self):
        p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(self.relay.port),
                            "--local-interface", OUTSIDER, "--from", "user@example.com",
                            "--to", "rcpt@example.net", "--timeout", "20"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        out = p.stdout.decode()
        self.assertNotEqual(p.returncode, 0, out)
        self.assertIn(RELAY_DENIED, out)

    def test_unregistered_even_under_tls(self):
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10,
                          source_address=(OUTSIDER, 0)) as s:
            s.ehlo("stranger.example")
            s.starttls(context=client_tls())
            s.ehlo("stranger.example")
            self.assertEqual(s.mail("user@example.com")[0], 550)

    def test_auth_refused_before_tls(self):
        with self.relay.connect(source=OUTSIDER) as c:
            c.hello()
            c.expect(538, "AUTH PLAIN AHZwczIAZTJlLXRva2VuLW9mLXZwczI=\r\n")
            c.expect(550, "MAIL FROM:<user@example.org>\r\n")

    def test_wrong_token_refused(self):
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10,
                          source_address=(OUTSIDER, 0)) as s:
            s.ehlo("x.example")
            s.starttls(context=client_tls())
            s.ehlo("x.example")
            for user, token in (("vps2", TOKEN + "x"), ("vps1", TOKEN), ("nobody", TOKEN)):
                with self.assertRaises(smtplib.SMTPAuthenticationError) as e:
                    s.user, s.password = user, token
                    s.auth("PLAIN", s.auth_plain)
                self.assertEqual(e.exception.smtp_code, 535)
            self.assertEqual(s.mail("user@example.org")[0], 550)

    # --- smuggling ---

    def test_smuggling_variants(self):
        """A second transaction hidden behind a false end of DATA never runs
        and nothing is queued. A bare CR or LF ends the session (521); a NUL
        keeps DATA going to the real <CRLF>.<CRLF> (the smuggled message's
        own), where the whole message is refused (554)."""
        before = self.queued()
        smuggled = (b"MAIL FROM:<user@example.com>\r\nRCPT TO:<victim@example.net>\r\n"
                    b"DATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")
        for ending in SMUGGLING:
            with self.subTest(ending=ending):
                with self.relay.connect() as c:
                    c.hello()
                    c.expect(250, "MAIL FROM:<user@example.com>\r\n")
                    c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
                    c.expect(354, "DATA\r\n")
                    # NOOP marks the end: its 250 is the only one allowed.
                    c.send(b"Subject: carrier\r\n\r\ncarrier" + ending + smuggled + b"NOOP\r\n")
                    replies = []
                    try:
                        while not replies or replies[-1][0] != 250:
                            replies.append(c.reply())
                    except EOFError:
                        pass
                    except (ConnectionResetError, BrokenPipeError) as e:
                        self.fail("reset instead of a refusal: %s (got %r)" % (e, replies))
                    codes = [code for code, _ in replies]
                    if b"\x00" in ending:
                        self.assertEqual(codes[0], 554, replies)
                        self.assertIn("NUL", replies[0][1])
                        self.assertEqual(codes[-1], 250, "the session should go on")
                        self.assertTrue(all(500 <= x < 600 for x in codes[1:-1]), replies)
                    else:
                        self.assertEqual(codes, [521], replies)
                        self.assertIn("SMTP smuggling", replies[0][1])
                        self.assertTrue(c.closed(), "still open after 521")
        self.assertEqual(self.queued(), before)

    def test_bare_lf_in_command(self):
        with self.relay.connect() as c:
            c.hello()
            c.send(b"MAIL FROM:<user@example.com>\nRCPT TO:<rcpt@example.net>\r\n")
            code, text = c.reply()
            self.assertEqual(code, 521, text)
            self.assertIn("bare <LF>", text)
            self.assertTrue(c.closed())
            self.assertEqual(c.buf, b"")

    def test_bare_cr_in_bdat(self):
        before = self.queued()
        chunk = b"Subject: x\r\n\r\nbare\rcr\r\n"
        with self.relay.connect() as c:
            c.hello()
            c.send(b"MAIL FROM:<user@example.com>\r\nRCPT TO:<rcpt@example.net>\r\n"
                   + b"BDAT %d LAST\r\n" % len(chunk) + chunk)
            c.expect(250)
            c.expect(250)
            code, text = c.reply()
            self.assertEqual(code, 521, text)
            self.assertTrue(c.closed())
        self.assertEqual(self.queued(), before)

    # --- STARTTLS injection (CVE-2011-0411 class) ---

    def test_starttls_injection(self):
        before = self.queued()
        with self.relay.connect() as c:
            c.hello()
            c.send(b"STARTTLS\r\nMAIL FROM:<x@y.example>\r\n")
            code, text = c.reply()
            self.assertEqual(code, 554, text)
            self.assertIn("pipelined after STARTTLS", text)
            self.assertTrue(c.closed(), "connection kept after injection")
            # No 220 to STARTTLS, no 250 to the injected MAIL.
            self.assertEqual(c.buf, b"")
        self.assertEqual(self.queued(), before)
        self.assertIsNotNone(self.relay.wait_log(r"reason=starttls_injection"))

    def test_starttls_alone_still_works(self):
        with self.relay.connect() as c:
            c.hello()
            c.expect(220, "STARTTLS\r\n")
            c.starttls()
            # RFC 3207 4.2: the EHLO before TLS is forgotten.
            c.expect(503, "MAIL FROM:<user@example.com>\r\n")
            c.expect(250, "EHLO vps1.example.com\r\n")
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")


if __name__ == "__main__":
    unittest.main()
