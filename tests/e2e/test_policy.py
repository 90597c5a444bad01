"""Who may send what (issue 4), end to end against vmrelay --io kernel: the
sender rules on the envelope and on the header From, AUTH with a token from
an address no account lists, and the sending windows: the minute, the hour
and the day (451 4.7.1 saying which), counts that survive kill -9, hold mode,
and quotas changed by SIGHUP.

Accounts here: vps1 (127.0.0.1, hostname vps1.example.com) may send as
example.com and lists.example.net; pending.example is listed but not
verified. vps2 has no loopback address and authenticates with TOKEN.
"""

import base64
import hashlib
import re
import signal
import smtplib
import subprocess
import unittest

import relay
from relay import OUTSIDER, TOKEN, Relay, message, queued_qid

POLICY_ACCOUNTS = [
    {"id": "vps1", "ips": ["127.0.0.1", "::1"], "hostname": "vps1.example.com",
     "domains": ["example.com", "lists.example.net",
                 {"name": "pending.example", "verified": False}]},
    {"id": "vps2", "ips": ["192.0.2.10"], "hostname": "vps2.example.org",
     "domains": ["example.org"], "auth_sha256": hashlib.sha256(TOKEN.encode()).hexdigest()},
]


def plain_response(user, token):
    """The AUTH PLAIN initial response (RFC 4616)."""
    return base64.b64encode(b"\0" + user.encode() + b"\0" + token.encode()).decode()


def mail(sender, header_from, to="rcpt@example.net", subject="policy"):
    """A message whose envelope says sender and whose header says From."""
    return ("From: %s\r\nTo: <%s>\r\nSubject: %s\r\n\r\nHello.\r\n"
            % (header_from, to, subject)).encode()


class SenderRulesTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(accounts=POLICY_ACCOUNTS, workers=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.stop()
        cls.relay.cleanup()

    def transaction(self, sender, header_from):
        """(code, text) of MAIL, or of the message if MAIL took."""
        with self.relay.connect() as c:
            c.hello("vps1.example.com")
            c.send("MAIL FROM:<%s>\r\n" % sender)
            code, text = c.reply()
            if code != 250:
                return code, text
            c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
            c.expect(354, "DATA\r\n")
            c.send(mail(sender, header_from) + b".\r\n")
            return c.reply()

    def assertRefused(self, reply, domain, what="sender domain"):
        code, text = reply
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.1", text)
        self.assertIn("%s %s " % (what, domain), text)
        self.assertIn("VPS vps1", text)

    def test_own_domain_accepted(self):
        code, text = self.transaction("user@example.com", "User <user@example.com>")
        self.assertEqual(code, 250, text)
        rec = self.relay.queue()[queued_qid(text)]
        self.assertEqual(rec["account"], "vps1")

    def test_hostname_mail_accepted(self):
        """root@hostname: cron mail, read receipts."""
        code, text = self.transaction("root@vps1.example.com",
                                      "root@vps1.example.com (Cron Daemon)")
        self.assertEqual(code, 250, text)
        self.assertIn(queued_qid(text), self.relay.queue())

    def test_foreign_envelope_sender_refused(self):
        before = set(self.relay.queue())
        self.assertRefused(self.transaction("user@example.org", "user@example.com"),
                           "example.org")
        self.assertEqual(set(self.relay.queue()), before)

    def test_foreign_header_from_refused(self):
        before = set(self.relay.queue())
        self.assertRefused(self.transaction("user@example.com", '"Your Bank" <ceo@bank.example>'),
                           "bank.example", "header From domain")
        # every address of the From must be the VPS's
        self.assertRefused(self.transaction("user@example.com",
                                            "user@example.com, other@elsewhere.example"),
                           "elsewhere.example", "header From domain")
        self.assertEqual(set(self.relay.queue()), before)

    def test_subdomains(self):
        """A listed domain covers itself only; a listed subdomain is usable."""
        self.assertRefused(self.transaction("news@news.example.com", "news@example.com"),
                           "news.example.com")
        self.assertRefused(self.transaction("user@example.com", "news@news.example.com"),
                           "news.example.com", "header From domain")
        code, text = self.transaction("list@lists.example.net", "The list <list@lists.example.net>")
        self.assertEqual(code, 250, text)
        self.assertRefused(self.transaction("x@example.net", "x@example.net"), "example.net")

    def test_pending_domain_refused(self):
        code, text = self.transaction("user@pending.example", "user@example.com")
        self.assertEqual(code, 550, text)
        self.assertIn("5.7.1 sender domain pending.example of VPS vps1 is pending verification",
                      text)
        code, text = self.transaction("user@example.com", "user@pending.example")
        self.assertEqual(code, 550, text)
        self.assertIn("header From domain pending.example of VPS vps1 is pending verification",
                      text)

    def test_null_sender(self):
        """Bounces from the VPS pass at MAIL; their From is still checked."""
        code, text = self.transaction("", "Mail Delivery System <MAILER-DAEMON@vps1.example.com>")
        self.assertEqual(code, 250, text)
        self.assertEqual(self.relay.queue()[queued_qid(text)]["sender"], "")
        self.assertRefused(self.transaction("", "MAILER-DAEMON@relay.e2e.test"),
                           "relay.e2e.test", "header From domain")

    def test_missing_and_broken_from(self):
        with self.relay.connect() as c:
            c.hello("vps1.example.com")
            for msg, want in (
                    (b"Subject: no From\r\n\r\nbody\r\n", "no From header field"),
                    (b"From: a@example.com\r\nFrom: b@example.com\r\n\r\n",
                     "more than one From header field"),
                    (b"From: Just A Name\r\n\r\n",
                     'header From "Just A Name" is not a valid address list'),
                    (b"no header at all\r\n", '"no header at all" in its header section')):
                c.expect(250, "MAIL FROM:<user@example.com>\r\n")
                c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
                c.expect(354, "DATA\r\n")
                text = c.expect(550, msg + b".\r\n")
                self.assertIn("5.7.1 message refused: ", text)
                self.assertIn(want, text)

    def test_smtplib_with_display_names_and_encoded_words(self):
        """What real MUAs write: encoded words, quoted names, folding."""
        msg = (b"From: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <jorg@example.com>,\r\n"
               b" \"Team, the\" <team@lists.example.net>\r\n"
               b"Sender: jorg@example.com\r\nSubject: hello\r\n\r\nHi.\r\n")
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            s.mail("jorg@example.com")
            s.rcpt("a@example.net")
            code, text = s.data(msg)
        self.assertEqual(code, 250, text)
        self.assertEqual(self.relay.body_of(queued_qid(text)), msg)


class AuthTest(unittest.TestCase):
    """A VPS whose address is not registered authenticates with its token,
    only over TLS, and then sends as itself."""

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay(accounts=POLICY_ACCOUNTS, workers=1).start()

    @classmethod
    def tearDownClass(cls):
        cls.relay.stop()
        cls.relay.cleanup()

    def test_token_from_unregistered_ip_only_after_tls(self):
        with smtplib.SMTP("127.0.0.1", self.relay.port, timeout=10,
                          source_address=(OUTSIDER, 0)) as s:
            s.ehlo("vps2.example.org")
            self.assertFalse(s.has_extn("auth"), "AUTH offered before TLS")
            code, text = s.docmd("AUTH", "PLAIN " + plain_response("vps2", TOKEN))
            self.assertEqual(code, 538, text)
            code, text = s.mail("user@example.org")
            self.assertEqual(code, 550, text)
            self.assertIn(b"127.0.0.2 is not a registered VPS", text)
            s.starttls(context=relay.client_tls())
            s.ehlo("vps2.example.org")
            self.assertTrue(s.has_extn("auth"))
            with self.assertRaises(smtplib.SMTPAuthenticationError):
                s.login("vps2", "not-the-token")
            s.login("vps2", TOKEN)
            # authenticated as vps2: its domains, not vps1's
            code, text = s.mail("user@example.com")
            self.assertEqual(code, 550, text)
            self.assertIn(b"sender domain example.com is not registered for VPS vps2", text)
            s.rset()
            s.mail("user@example.org")
            s.rcpt("rcpt@example.net")
            code, text = s.data(message("from vps2", sender="user@example.org"))
        self.assertEqual(code, 250, text)
        rec = self.relay.queue()[queued_qid(text)]
        self.assertEqual(rec["account"], "vps2")
        self.assertEqual(rec["client"], OUTSIDER)
        self.assertEqual(sorted(rec["flags"]), ["auth", "tls"])


def quota_account(daily_quota, over_quota="defer"):
    return [{"id": "vps1", "ips": ["127.0.0.1"], "hostname": "vps1.example.com",
             "domains": ["example.com"], "daily_quota": daily_quota, "over_quota": over_quota}]


def recipients(c, n, first=0):
    """Sends n RCPTs in one write (PIPELINING); their (code, text) replies."""
    c.send("".join("RCPT TO:<r%d@example.net>\r\n" % i for i in range(first, first + n)))
    return [c.reply() for _ in range(n)]


class QuotaTest(unittest.TestCase):
    """Each accepted recipient counts as one mail; a recipient that does not
    fit gets 451 4.7.1 with the limit, the count and when a slot frees."""

    def setUp(self):
        self.relays = []

    def tearDown(self):
        for r in self.relays:
            r.stop()
            r.cleanup()

    def relay(self, limits, accounts=None):
        r = Relay(accounts=accounts or quota_account(1000), workers=2, limits=limits)
        self.relays.append(r)
        return r.start()

    def send(self, r, n=1, expect=250):
        """One message to n recipients; asserts every RCPT and the message
        got expect; returns the message's reply text (or None)."""
        with r.connect() as c:
            c.hello("vps1.example.com")
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            codes = [code for code, _ in recipients(c, n)]
            self.assertEqual(codes, [expect] * n)
            if expect != 250:
                return None
            c.expect(354, "DATA\r\n")
            return c.expect(250, message("quota") + b".\r\n")

    def refused(self, r):
        """The 451 text a new transaction's first recipient gets."""
        with r.connect() as c:
            c.hello("vps1.example.com")
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            return c.expect(451, "RCPT TO:<late@example.net>\r\n")

    def test_61st_mail_in_a_minute(self):
        """The default limits: 60 mails per minute."""
        r = self.relay(limits={})
        with r.connect() as c:
            c.hello("vps1.example.com")
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            replies = recipients(c, 61)
            self.assertEqual([code for code, _ in replies[:60]], [250] * 60)
            self.assertEqual(replies[60][0], 451, replies[60])
            self.assertRegex(replies[60][1], r"^451 4\.7\.1 60 mails per minute reached "
                                             r"\(60/60\), next slot in (\d+s|1m0\ds)$")
            c.expect(354, "DATA\r\n")
            qid = queued_qid(c.expect(250, message("sixty") + b".\r\n"))
        self.assertEqual(len(r.queue()[qid]["recipients"]), 60)
        self.assertRegex(self.refused(r), r"60 mails per minute reached \(60/60\)")
        self.assertIsNotNone(r.wait_log(r"event=refused .*reason=quota reply=\"451 4\.7\.1 60 "))

    def test_251st_mail_in_an_hour(self):
        """250 per hour (the default), the minute window out of the way."""
        r = self.relay(limits={"per_minute": 255})
        for n in (100, 100, 50):
            self.send(r, n)
        self.assertRegex(self.refused(r), r"^451 4\.7\.1 250 mails per hour reached "
                                          r"\(250/250\), next slot in (\d+m\d\ds|1h0\dm)$")

    def test_daily_quota(self):
        r = self.relay(limits=relay.LIMITS, accounts=quota_account(7))
        self.send(r, 4)
        self.send(r, 3)
        self.assertRegex(self.refused(r), r"^451 4\.7\.1 daily quota 7/7 reached, resets "
                                          r"00:00 UTC in (\d+h\d\dm|\d+m\d\ds|\d+s)$")

    def test_quota_survives_kill9(self):
        r = self.relay(limits=relay.LIMITS, accounts=quota_account(3))
        self.send(r, 2)
        self.send(r)
        r.kill()
        offset = len(r.log())
        r.start()
        self.assertIsNotNone(r.wait_log(r"event=quota_replayed messages=2 mails=3", offset=offset))
        self.assertIn("daily quota 3/3 reached", self.refused(r))

    def test_slots_given_back(self):
        """RSET, a refused message, a dropped connection: nothing sent, so
        nothing counted."""
        r = self.relay(limits=relay.LIMITS, accounts=quota_account(2))
        with r.connect() as c:
            c.hello("vps1.example.com")
            for _ in range(3):
                c.expect(250, "MAIL FROM:<user@example.com>\r\n")
                recipients(c, 2)
                c.expect(250, "RSET\r\n")
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            recipients(c, 2)
            c.expect(354, "DATA\r\n")
            c.expect(550, mail("user@example.com", "x@elsewhere.example") + b".\r\n")
        with r.connect() as c:
            c.hello("vps1.example.com")
            c.expect(250, "MAIL FROM:<user@example.com>\r\n")
            recipients(c, 2)
        self.send(r, 2)
        self.assertIn("daily quota 2/2 reached", self.refused(r))

    def test_unlimited_account_is_not_limited(self):
        """"unlimited": true (the provider's own systems, benchmarks): the
        windows do not apply, the sender rules still do."""
        accounts = quota_account(2)
        accounts[0]["unlimited"] = True
        r = self.relay(limits=relay.LIMITS, accounts=accounts)
        self.send(r, 2)
        self.send(r, 3)
        with r.connect() as c:
            c.hello("vps1.example.com")
            c.expect(550, "MAIL FROM:<user@elsewhere.example>\r\n")

    def test_hold_mode(self):
        """over_quota = hold: accepted with 250, held in the spool for the
        operator, logged and listed as held; held mail uses no quota."""
        r = self.relay(limits=relay.LIMITS, accounts=quota_account(2, "hold"))
        self.send(r, 2)
        text = self.send(r, 3)
        qid = queued_qid(text)
        rec = r.queue()[qid]
        self.assertIn("hold", rec["flags"])
        self.assertEqual(len(rec["recipients"]), 3)
        listing = r.spool().stdout.decode()
        self.assertRegex(listing, r"(?m)^%s! " % qid)
        self.assertIn(", 1 held (!)", listing)
        self.assertIsNotNone(r.wait_log(r"event=hold client=127\.0\.0\.1 account=vps1"))
        self.assertIsNotNone(r.wait_log(r"event=accepted qid=%s .* held=yes" % qid))
        # held mail is not replayed into the count after a restart
        r.stop()
        offset = len(r.log())
        r.start()
        self.assertIsNotNone(r.wait_log(r"event=quota_replayed messages=1 mails=2", offset=offset))
        qid = queued_qid(self.send(r))
        self.assertIn("hold", r.queue()[qid]["flags"])

    def test_check_refuses_impossible_limits(self):
        """[limits] the windows cannot keep are refused before anything runs."""
        r = Relay(accounts=quota_account(10), limits={"per_minute": 300})
        self.relays.append(r)
        p = subprocess.run([relay.VMRELAY, "-c", r.config_path, "--check"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"vmrelay: [limits] per_minute 300: must be 1 to 255", p.stderr)

    def test_sighup_changes_quota(self):
        r = self.relay(limits=relay.LIMITS, accounts=quota_account(2))
        self.send(r, 2)
        self.assertIn("daily quota 2/2 reached", self.refused(r))

        r.write_accounts(quota_account(4))
        r.signal(signal.SIGHUP)
        self.assertIsNotNone(r.wait_log(r"event=reload accounts=1"))
        self.send(r)

        # a broken file: logged, and the quota of 4 stays in force
        with open(r.accounts_path, "a") as f:
            f.write('{"id": "vps9", "daily_quota": "lots"}\n')
        r.signal(signal.SIGHUP)
        self.assertIsNotNone(r.wait_log(r"event=reload_failed .*accounts\.jsonl:2"))
        self.send(r)
        self.assertIn("daily quota 4/4 reached", self.refused(r))


if __name__ == "__main__":
    unittest.main()
