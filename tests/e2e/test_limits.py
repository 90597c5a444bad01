"""Protocol limits, each with the reply a client sees: command line length,
recipients per transaction, message size (SIZE= and actual), protocol errors,
idle timeout, talking before the banner, connections per client address.
"""

import time
import unittest

from relay import HOSTNAME, Relay, message, queued_qid

LIMITS = {
    "max_recipients": 3,
    "max_message_size": 10240,
    "max_errors": 3,
    "idle_timeout_ms": 1000,
    "greet_pause_ms": 200,
}


class LimitsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(smtp=LIMITS).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.stop()
        cls.relay.cleanup()

    def test_command_line_too_long(self):
        with self.relay.connect() as c:
            c.hello()
            # 513 octets with CRLF: one over RFC 5321's 512.
            c.expect(500, "NOOP " + "x" * 506 + "\r\n")
            c.expect(250, "NOOP\r\n")          # the rest was skipped, the session goes on
            c.expect(500, "MAIL FROM:<" + "a" * 5000 + "@example.com>\r\n")
            c.expect(250, "RSET\r\n")

    def test_command_line_at_limit(self):
        with self.relay.connect() as c:
            c.hello()
            c.expect(250, "NOOP " + "x" * 505 + "\r\n")

    def test_too_many_recipients(self):
        msg = message("four recipients")
        with self.relay.connect() as c:
            c.hello()
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            for i in range(3):
                c.expect(250, "RCPT TO:<r%d@example.net>\r\n" % i)
            text = c.expect(452, "RCPT TO:<r3@example.net>\r\n")
            self.assertIn("4.5.3", text)
            c.expect(354, "DATA\r\n")
            qid = queued_qid(c.expect(250, msg + b".\r\n"))
        self.assertEqual(self.relay.queue()[qid]["recipients"],
                         ["r0@example.net", "r1@example.net", "r2@example.net"])

    def test_size_parameter_over_limit(self):
        with self.relay.connect() as c:
            text = c.hello()
            self.assertIn("SIZE 10240", text)
            text = c.expect(552, "MAIL FROM:<user@example.com> SIZE=10241\r\n")
            self.assertIn("5.3.4", text)
            self.assertIn("10240", text)
            c.expect(250, "MAIL FROM:<user@example.com> SIZE=10240\r\n")

    def test_message_over_limit(self):
        before = set(self.relay.queue())
        big = message("too big", b"z" * 998 + b"\r\n") + (b"z" * 998 + b"\r\n") * 12
        with self.relay.connect() as c:
            c.hello()
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
            c.expect(354, "DATA\r\n")
            text = c.expect(552, big + b".\r\n")
            self.assertIn("exceeds fixed limit of 10240 octets", text)
            # Refused, not dropped: the next transaction works.
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
        self.assertEqual(set(self.relay.queue()), before)

    def test_text_line_over_1000(self):
        with self.relay.connect() as c:
            c.hello()
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
            c.expect(354, "DATA\r\n")
            text = c.expect(554, message("long line", b"w" * 1001 + b"\r\n") + b".\r\n")
            self.assertIn("5.6.0", text)

    def test_too_many_errors(self):
        with self.relay.connect() as c:
            c.hello()
            c.expect(500, "FOO\r\n")
            c.expect(500, "BAR\r\n")
            c.send("BAZ\r\n")
            c.expect(500)
            text = c.expect(421)
            self.assertIn("4.7.0 %s too many errors" % HOSTNAME, text)
            self.assertTrue(c.closed())

    def test_idle_timeout(self):
        with self.relay.connect() as c:
            c.hello()
            t0 = time.monotonic()
            text = c.expect(421)
            waited = time.monotonic() - t0
            self.assertIn("4.4.2 %s timeout exceeded" % HOSTNAME, text)
            self.assertGreater(waited, 0.8)
            self.assertLess(waited, 3)
            self.assertTrue(c.closed())

    def test_idle_timeout_inside_data(self):
        with self.relay.connect() as c:
            c.hello()
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
            c.expect(354, "DATA\r\n")
            c.send(b"Subject: never finished\r\n")
            c.expect(421)
            self.assertTrue(c.closed())

    def test_pregreet(self):
        with self.relay.connect() as c:
            c.send("EHLO early.example\r\n")
            code, text = c.reply()
            self.assertEqual(code, 554, text)
            self.assertIn("talked before the greeting", text)
            self.assertTrue(c.closed())
        self.assertIsNotNone(self.relay.wait_log(r"reason=pregreet"))

    def test_greet_pause_kept(self):
        t0 = time.monotonic()
        with self.relay.connect() as c:
            c.expect(220)
            self.assertGreater(time.monotonic() - t0, 0.15)


class ConnectionLimitTest(unittest.TestCase):

    def test_per_ip(self):
        with Relay(smtp={"max_conn_per_ip": 3}, workers=2) as r:
            held = [r.connect() for _ in range(3)]
            for c in held:
                c.expect(220)
            for _ in range(3):          # whichever worker accepts it
                with r.connect() as c:
                    text = c.expect(421)
                    self.assertIn("4.7.0 %s too many connections from 127.0.0.1" % HOSTNAME,
                                  text)
                    self.assertTrue(c.closed())
            # Another address is counted apart.
            with r.connect(source="127.0.0.3") as c:
                c.expect(220)
            # One leaves: a place is free again.
            held[0].expect(221, "QUIT\r\n")
            self.assertTrue(held[0].closed())
            held[0].close()
            time.sleep(0.1)
            with r.connect() as c:
                c.expect(220)
            for c in held[1:]:
                c.close()
            self.assertIsNotNone(r.wait_log(r"reason=max_conn_per_ip"))


if __name__ == "__main__":
    unittest.main()
