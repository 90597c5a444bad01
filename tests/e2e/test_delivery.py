"""Delivery end to end: mail accepted by a real vmrelay leaves it.

Receivers are aiosmtpd servers on loopback recording every transaction
(envelope and bytes), each with a script of what to refuse; routes are the
[delivery] smarthost or MX records that a real nsd (tests/e2e/dnsserver.py)
serves for test domains, pointing at receivers on port 25 of 127.0.55.x
addresses of their own. Cases: delivery and no second delivery after a
restart, DKIM verified with dkimpy, temporary failures retried then
delivered, a 5xx giving exactly one DSN that Python's email package reads as
a delivery-status report, expiry giving a DSN, kill -9 in the middle of
delivery losing nothing, and MX routing: an unreachable MX before a working
one, fallback to the A record, null MX bouncing at once.
"""

import base64
import email
import hashlib
import email.policy
import json
import os
import re
import smtplib
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aiosmtpd.controller import Controller  # noqa: E402

import dnsserver  # noqa: E402
from relay import ACCOUNTS, Relay, message, test_cert  # noqa: E402

SENDER = "user@example.com"


def free_port():
    return dnsserver.free_port()


class Receiver:
    """An aiosmtpd server that records what it accepts. refuse(rcpt,
    attempt) may return a reply ("451 4.3.0 later") to refuse a recipient
    at RCPT; attempt counts that recipient's tries from 1."""

    def __init__(self, host="127.0.0.1", port=None, refuse=None, data_delay=0.0, tls=False,
                 smtputf8=True):
        self.host = host
        self.port = port or free_port()
        self.refuse = refuse
        self.data_delay = data_delay
        self.got = []                 # (mail_from, [rcpts], bytes)
        self.tries = {}
        self.sessions = set()         # the SMTP sessions that carried mail
        self.lock = threading.Lock()
        kw = {"enable_SMTPUTF8": smtputf8}
        if tls:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(*test_cert())
            kw.update(tls_context=ctx, require_starttls=True)
        self.ctl = Controller(self, hostname=host, port=self.port, **kw)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            n = self.tries[address] = self.tries.get(address, 0) + 1
        reply = self.refuse(address, n) if self.refuse else None
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_delay:
            time.sleep(self.data_delay)
        with self.lock:
            self.got.append((envelope.mail_from, list(envelope.rcpt_tos),
                             envelope.original_content or envelope.content))
            self.sessions.add(id(session))
        return "250 2.0.0 accepted"

    def start(self):
        self.ctl.start()
        return self

    def stop(self):
        self.ctl.stop()

    def wait(self, n, timeout=20):
        """Waits for n messages; returns what was received."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.got) >= n:
                    return list(self.got)
            time.sleep(0.05)
        with self.lock:
            return list(self.got)

    def dsns(self):
        """What came from the null sender (aiosmtpd says "<>")."""
        with self.lock:
            return [g for g in self.got if g[0] == "<>"]


def ed25519_key(dirname):
    """An Ed25519 key file and the p= value of its DNS record."""
    key = os.path.join(dirname, "ed1.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", key], check=True,
                   stdout=subprocess.DEVNULL)
    der = subprocess.run(["openssl", "pkey", "-in", key, "-pubout", "-outform", "DER"],
                         check=True, stdout=subprocess.PIPE).stdout
    return key, base64.b64encode(der[-32:]).decode()


def relay_with(delivery, accounts=None, workers=1):
    """A started relay whose [delivery] section is delivery (a dict)."""
    return Relay(workers=workers, tls=False, accounts=accounts, delivery=delivery).start()


def send(r, subject, rcpts, sender=SENDER, body=b"Hello.\r\n"):
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.sendmail(sender, rcpts, message(subject, body=body, sender=sender, to=rcpts[0]))


def parse(raw):
    return email.message_from_bytes(raw, policy=email.policy.compat32)


class DeliveryCase(unittest.TestCase):
    def setUp(self):
        self.cleanups = []

    def tearDown(self):
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:
                pass

    def receiver(self, **kw):
        rx = Receiver(**kw).start()
        self.cleanups.append(rx.stop)
        return rx

    def relay(self, delivery, **kw):
        r = relay_with(delivery, **kw)
        self.cleanups.append(r.cleanup)
        self.cleanups.append(r.stop)
        return r

    def check_dsn(self, raw, rcpts, status_class):
        """raw is a DSN about rcpts: multipart/report, delivery-status."""
        msg = parse(raw)
        self.assertEqual(msg.get_content_type(), "multipart/report")
        self.assertEqual(msg.get_param("report-type"), "delivery-status")
        parts = msg.get_payload()
        self.assertEqual([p.get_content_type() for p in parts],
                         ["text/plain", "message/delivery-status", "text/rfc822-headers"])
        # Python gives the status part as blocks: per-message, then one per recipient.
        blocks = parts[1].get_payload()
        self.assertIn("dns;", blocks[0]["Reporting-MTA"])
        got = [b["Final-Recipient"].split(";", 1)[1].strip() for b in blocks[1:]]
        self.assertEqual(sorted(got), sorted(rcpts))
        for b in blocks[1:]:
            self.assertEqual(b["Action"], "failed")
            self.assertTrue(b["Status"].startswith(status_class), b["Status"])
        return msg


class SmarthostTest(DeliveryCase):
    def test_delivered_once_and_signed(self):
        tmp = tempfile.mkdtemp(prefix="vr-e2e-dkim-")
        self.cleanups.append(lambda: subprocess.run(["rm", "-rf", tmp]))
        key, pub = ed25519_key(tmp)
        accounts = [dict(a) for a in ACCOUNTS]
        accounts[0]["dkim"] = {"example.com": [{"selector": "ed1", "algorithm": "ed25519-sha256",
                                                "key": key}]}
        rx = self.receiver()
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port}, accounts=accounts)
        for i in range(3):
            # the last one big: its body spans several spool records
            body = b"a line of a long message\r\n" * (100000 if i == 2 else 1)
            send(r, "smarthost %d" % i, ["a%d@dest.example" % i, "b%d@dest.example" % i],
                 body=body)
        got = rx.wait(3)
        self.assertEqual(len(got), 3, r.log())
        self.assertEqual(sorted(g[1][0] for g in got),
                         ["a0@dest.example", "a1@dest.example", "a2@dest.example"])
        self.assertGreater(max(len(g[2]) for g in got), 2600000)
        for mail_from, rcpts, raw in got:
            self.assertEqual(mail_from, SENDER)
            self.assertEqual(len(rcpts), 2)
            self.assertTrue(raw.startswith(b"DKIM-Signature:"), raw[:200])
            self.assertIn(b"Received: ", raw)
            import dkim

            def dns(name, timeout=5):
                self.assertEqual(name, b"ed1._domainkey.example.com.")
                return ("v=DKIM1; k=ed25519; p=" + pub).encode()
            self.assertTrue(dkim.verify(raw, dnsfunc=dns), raw[:600])
        self.assertRegex(r.log(), r"event=delivery qid=\w+ vps=vps1 rcpt=\"a0@dest.example\" "
                         r"mx=127.0.0.1:\d+ ip=127.0.0.1 tls=none dane=no result=sent delay=[\d.]+ "
                         r"attempts=1 reply=\"250 2.0.0 accepted\"")
        # A restart finds every recipient final: nothing goes twice.
        self.assertEqual(r.stop(), 0)
        r.start()
        self.assertTrue(r.wait_log(r"event=queue_loaded messages=0 ", timeout=5), r.log())
        time.sleep(1)
        self.assertEqual(len(rx.got), 3)

    def test_connections_reused(self):
        rx = self.receiver()
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port})
        for i in range(6):
            send(r, "one by one %d" % i, ["r%d@dest.example" % i])
            self.assertEqual(len(rx.wait(i + 1)), i + 1, r.log())
            time.sleep(0.1)         # well inside the 2 s an idle connection waits
        # each delivery thread kept its connection for the next message
        self.assertLessEqual(len(rx.sessions), 2, r.log())

    def test_starttls_when_offered(self):
        rx = self.receiver(tls=True)
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port})
        send(r, "over tls", ["t@dest.example"])
        got = rx.wait(1)
        self.assertEqual(len(got), 1, r.log())
        self.assertRegex(r.log(), r"rcpt=\"t@dest.example\" .* tls=TLSv1\.[23] dane=no result=sent")

    def test_tempfail_retried_then_delivered(self):
        rx = self.receiver(refuse=lambda rcpt, n: "451 4.3.0 try later" if n <= 2 else None)
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port, "retry_first_s": 1,
                        "retry_max_s": 2})
        send(r, "tempfail", ["slow@dest.example"])
        got = rx.wait(1, timeout=20)
        self.assertEqual(len(got), 1, r.log())
        self.assertEqual(rx.tries["slow@dest.example"], 3)
        log = r.log()
        self.assertEqual(len(re.findall(r"result=deferred .*reply=\"451 4.3.0 try later\"", log)),
                         2, log)
        self.assertRegex(log, r"result=sent delay=[\d.]+ attempts=3 ")
        self.assertEqual(rx.dsns(), [])

    def test_unreachable_deferred_then_delivered(self):
        port = free_port()
        r = self.relay({"smarthost": "127.0.0.1:%d" % port, "retry_first_s": 1,
                        "retry_max_s": 1})
        send(r, "later", ["later@dest.example"])
        self.assertTrue(r.wait_log(r"result=deferred .*reply=\"451 4.4.1 connect to "
                                   r"127.0.0.1\[127.0.0.1\]:%d: Connection refused" % port),
                        r.log())
        rx = self.receiver(port=port)
        got = rx.wait(1, timeout=10)
        self.assertEqual(len(got), 1, r.log())
        self.assertRegex(r.log(), r"result=sent .*attempts=[2-9]")

    def test_5xx_gives_one_dsn(self):
        def refuse(rcpt, n):
            return "550 5.1.1 no such user" if rcpt.startswith("bad") else None
        rx = self.receiver(refuse=refuse)
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port})
        send(r, "bounce me", ["good@dest.example", "bad1@dest.example", "bad2@dest.example"])
        got = rx.wait(2)
        time.sleep(1)                  # a second DSN would have come by now
        dsns = rx.dsns()
        self.assertEqual(len(dsns), 1, r.log())
        self.assertEqual(len(rx.got), 2)
        mail_from, rcpts, raw = dsns[0]
        self.assertEqual(rcpts, [SENDER])
        msg = self.check_dsn(raw, ["bad1@dest.example", "bad2@dest.example"], "5.1.1")
        self.assertIn("no such user", parts_text(msg))
        self.assertIn(b"Subject: bounce me", raw)
        normal = [g for g in got if g[0] == SENDER]
        self.assertEqual(normal[0][1], ["good@dest.example"])
        self.assertRegex(r.log(), r"event=dsn qid=\w+ dsn_qid=\w+ to=<user@example.com> "
                         r"recipients=2 reason=bounced")
        # The operator's view: the counters in `stats`.
        st = json.loads(r.ctl("stats").stdout)["delivery"]
        self.assertEqual((st["sent"], st["bounced"], st["dsns"], st["in_flight"]), (2, 2, 1, 0))

    def test_smtputf8_to_a_server_without_it_bounces(self):
        rx = self.receiver(smtputf8=False)
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port})
        with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            s.sendmail(SENDER, ["jürgen@dest.example"],
                       message("utf8", to="x@dest.example"), mail_options=["SMTPUTF8"])
        got = rx.wait(1)
        self.assertEqual(len(got), 1, r.log())
        self.assertEqual(got[0][0], "<>")
        # RFC 6533: the address in 7-bit utf-8-addr-xtext, readable back
        msg = self.check_dsn(got[0][2], [r"j\x{FC}rgen@dest.example"], "5.6.7")
        self.assertIn("SMTPUTF8 is required", parts_text(msg))

    def test_expiry_gives_dsn(self):
        # Refuses everyone but the DSN's recipient, for ever.
        rx = self.receiver(refuse=lambda rcpt, n: None if rcpt == SENDER else "451 4.2.0 full")
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port, "retry_first_s": 1,
                        "retry_max_s": 1, "max_age_s": 3})
        send(r, "too slow", ["late@dest.example"])
        got = rx.wait(1, timeout=20)
        self.assertEqual(len(got), 1, r.log())
        self.check_dsn(got[0][2], ["late@dest.example"], "4.")
        self.assertGreaterEqual(rx.tries["late@dest.example"], 2)
        self.assertRegex(r.log(), r"reason=expired")

    def test_sigterm_finishes_what_is_in_flight(self):
        rx = self.receiver(data_delay=2.0)
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port})
        send(r, "in flight", ["f@dest.example"])
        deadline = time.monotonic() + 10
        while "f@dest.example" not in rx.tries and time.monotonic() < deadline:
            time.sleep(0.02)
        t0 = time.monotonic()
        self.assertEqual(r.stop(), 0)
        self.assertLess(time.monotonic() - t0, 6)
        self.assertEqual(len(rx.got), 1, r.log())
        self.assertRegex(r.log(), r"result=sent .*\n(.*\n)*.*event=stop status=0")
        # Recorded before the exit: a restart sends nothing again.
        r.start()
        self.assertTrue(r.wait_log(r"event=queue_loaded messages=0 ", timeout=5), r.log())
        time.sleep(0.5)
        self.assertEqual(len(rx.got), 1)

    def test_kill9_loses_nothing(self):
        rx = self.receiver(data_delay=0.2)
        r = self.relay({"smarthost": "127.0.0.1:%d" % rx.port})
        n = 15
        for i in range(n):
            send(r, "crash %d" % i, ["c%d@dest.example" % i])
        rx.wait(3)
        r.kill()
        r.start()

        def subjects():
            with rx.lock:
                return {re.search(rb"Subject: (crash \d+)", g[2]).group(1) for g in rx.got}
        deadline = time.monotonic() + 30
        while len(subjects()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        # Every message at least once; twice only if it was in flight at the kill.
        self.assertEqual(len(subjects()), n, r.log())
        self.assertLessEqual(len(rx.got), n + 4 * 8)


class QueueCommandTest(DeliveryCase):
    """vmrelayctl queue list|show|hold|release|delete|flush (issue 6)."""

    def ctl(self, *args, ok=True):
        p = self.r.ctl("queue", *args)
        reply = json.loads(p.stdout)
        self.assertEqual(reply["ok"], ok, (args, p.stdout, p.stderr))
        self.assertEqual(p.returncode == 0, ok)
        return reply

    def shown_when(self, qid, done, timeout=10):
        """queue show QID once done(message) holds: show reads the state
        logs, which the delivery thread writes a moment after it acts."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.ctl("show", qid)["message"]
            if done(shown) or time.monotonic() > deadline:
                return shown
            time.sleep(0.02)

    def test_hold_release_delete_flush(self):
        self.accept = False
        self.rx = self.receiver(refuse=lambda rcpt, n: None if self.accept else "451 4.3.0 busy")
        # A retry an hour away: only the operator's commands move the mail.
        self.r = self.relay({"smarthost": "127.0.0.1:%d" % self.rx.port, "retry_first_s": 3600,
                             "retry_max_s": 3600})
        send(self.r, "keep", ["keep@dest.example"])
        send(self.r, "drop", ["drop@dest.example"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(self.rx.tries) < 2:
            time.sleep(0.05)
        listed = self.ctl("list")["messages"]
        self.assertEqual(len(listed), 2, listed)
        by_subject = {}
        for m in listed:
            shown = self.shown_when(m["qid"], lambda s: s["attempts"] > 0)
            self.assertEqual(shown["rcpts"][0]["state"], "pending")
            self.assertEqual((shown["attempts"], shown["pending"], shown["held"]), (1, 1, False))
            by_subject[shown["rcpts"][0]["address"].split("@")[0]] = m["qid"]
        keep, drop = by_subject["keep"], by_subject["drop"]

        self.assertEqual(self.ctl("hold", keep)["done"], "held")
        self.assertTrue(self.ctl("show", keep)["message"]["held"])
        # the operator's table: one line each, held ones marked as mailq does
        table = self.r.ctl("queue", "list", human=True).stdout
        self.assertRegex(table, r"(?m)^%s! +\d+ .* vps1 +1/1 +1 .* <user@example.com>$" % keep)
        self.assertRegex(table, r"(?m)^%s  +\d+ " % drop)
        self.assertTrue(table.endswith("2 messages\n"), table)
        self.assertIn("held already", self.ctl("hold", keep, ok=False)["error"])
        self.assertEqual(self.ctl("delete", drop)["done"], "deleted")
        self.assertEqual([m["qid"] for m in self.ctl("list")["messages"]], [keep])
        self.assertIn("no message", self.ctl("release", drop, ok=False)["error"])
        self.assertIn("no message", self.ctl("hold", "0000000000000", ok=False)["error"])
        self.assertIn("no message", self.ctl("show", "0000000000000", ok=False)["error"])

        # Accepting now; a flush moves nothing held or deleted.
        self.accept = True
        self.assertEqual(self.ctl("flush")["done"], "flushed")
        time.sleep(1)
        self.assertEqual(self.rx.got, [])
        # Released: delivered at once, an hour before its retry was due.
        self.ctl("release", keep)
        got = self.rx.wait(1, timeout=10)
        self.assertEqual([g[1] for g in got], [["keep@dest.example"]], self.r.log())
        self.assertEqual(self.ctl("list")["messages"], [])
        shown = self.shown_when(keep, lambda s: s["rcpts"][0]["state"] != "pending")
        self.assertEqual(shown["rcpts"][0]["state"], "delivered")
        # The deleted one stays deleted across a restart.
        self.assertEqual(self.r.stop(), 0)
        self.r.start()
        time.sleep(1)
        self.assertEqual(len(self.rx.got), 1)
        self.assertTrue(self.ctl("show", drop)["message"]["deleted"])

    def test_over_quota_hold_waits_for_release(self):
        # vps1 may send one mail a day; over it, mail is held for the operator
        account = dict(ACCOUNTS[0], daily_quota=1, over_quota="hold")
        self.rx = self.receiver()
        self.r = self.relay({"smarthost": "127.0.0.1:%d" % self.rx.port}, accounts=[account])
        send(self.r, "within quota", ["a@dest.example"])
        send(self.r, "over quota", ["b@dest.example"])
        self.assertEqual(len(self.rx.wait(1)), 1)
        time.sleep(0.5)
        self.assertEqual([g[1] for g in self.rx.got], [["a@dest.example"]])
        held = self.ctl("list")["messages"]
        self.assertEqual([(m["held"], m["attempts"]) for m in held], [(True, 0)])
        # held mail survives a restart held, then goes when released
        self.assertEqual(self.r.stop(), 0)
        self.r.start()
        self.assertEqual(self.ctl("list")["messages"][0]["held"], True)
        self.ctl("release", held[0]["qid"])
        got = self.rx.wait(2)
        self.assertEqual([g[1] for g in got], [["a@dest.example"], ["b@dest.example"]],
                         self.r.log())


def parts_text(msg):
    return "".join(str(p.get_payload()) for p in msg.walk() if not p.is_multipart())


# MX routing: receivers on port 25 of addresses no other test uses.
MX_OK = "127.0.55.2"
MX_DEAD = "127.0.55.3"        # nothing listens: connection refused
MX_A = "127.0.55.4"
MX_SENDER = "127.0.55.5"
MX_DANE = "127.0.55.6"        # STARTTLS with the test certificate


class MxTest(DeliveryCase):
    ZONES = {
        "dest.example": """
            @      MX 10 dead
            @      MX 20 ok
            dead   A  %s
            ok     A  %s
            """ % (MX_DEAD, MX_OK),
        "plain.example": """
            @      A  %s
            """ % MX_A,
        "null.example": """
            @      MX 0 .
            """,
        "example.com": """
            @      MX 10 mx
            mx     A  %s
            """ % MX_SENDER,
    }

    def setUp(self):
        super().setUp()
        self.dns = dnsserver.Nsd(self.ZONES)
        self.dns.start()
        self.cleanups.append(self.dns.stop)
        self.ok = self.receiver(host=MX_OK, port=25)
        self.a = self.receiver(host=MX_A, port=25)
        self.home = self.receiver(host=MX_SENDER, port=25)
        self.r = self.relay({"resolver": self.dns.address, "retry_first_s": 1,
                             "retry_max_s": 2})

    def test_dead_mx_then_working_one(self):
        send(self.r, "mx order", ["x@dest.example"])
        got = self.ok.wait(1)
        self.assertEqual(len(got), 1, self.r.log())
        self.assertEqual(got[0][1], ["x@dest.example"])
        log = self.r.log()
        self.assertRegex(log, r"event=connect_failed dest=dest.example mx=dead.dest.example "
                         r"ip=%s" % re.escape(MX_DEAD))
        self.assertRegex(log, r"mx=ok.dest.example ip=%s tls=\w+ dane=no result=sent"
                         % re.escape(MX_OK))

    def test_a_fallback(self):
        send(self.r, "no mx", ["y@plain.example"])
        got = self.a.wait(1)
        self.assertEqual(len(got), 1, self.r.log())

    def test_null_mx_bounces_at_once(self):
        send(self.r, "null mx", ["z@null.example", "w@null.example"])
        got = self.home.wait(1)
        self.assertEqual(len(got), 1, self.r.log())
        self.assertEqual(got[0][0], "<>")
        self.check_dsn(got[0][2], ["z@null.example", "w@null.example"], "5.1.10")
        time.sleep(1)
        self.assertEqual(len(self.home.got), 1)



def spki_sha256(cert):
    """The TLSA 3 1 1 data of a certificate: SHA-256 of its public key."""
    pem = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"], check=True,
                         stdout=subprocess.PIPE).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pem,
                         check=True, stdout=subprocess.PIPE).stdout
    return hashlib.sha256(der).hexdigest()


class DaneTest(DeliveryCase):
    """RFC 7672: signed zones (nsd, ldns-signzone) validated against their
    trust anchor; a matching TLSA record makes the TLS authenticated, a
    wrong one keeps the mail from going at all."""

    def setUp(self):
        super().setUp()
        good = spki_sha256(test_cert()[0])
        zones = {
            "dane.example": """
                @            MX 10 mx
                mx           A  %s
                _25._tcp.mx  TLSA 3 1 1 %s
                """ % (MX_DANE, good),
            "wrongkey.example": """
                @            MX 10 mx
                mx           A  %s
                _25._tcp.mx  TLSA 3 1 1 %s
                """ % (MX_DANE, "00" * 32),
        }
        self.dns = dnsserver.Nsd(zones, signed=list(zones))
        self.dns.start()
        self.cleanups.append(self.dns.stop)
        self.rx = self.receiver(host=MX_DANE, port=25, tls=True)
        self.r = self.relay({"resolver": self.dns.address, "trust_anchor": self.dns.trust_anchor,
                             "retry_first_s": 60, "retry_max_s": 60})

    def test_matching_tlsa_authenticates(self):
        send(self.r, "dane", ["x@dane.example"])
        got = self.rx.wait(1)
        self.assertEqual(len(got), 1, self.r.log())
        self.assertRegex(self.r.log(), r"rcpt=\"x@dane.example\" mx=mx.dane.example "
                         r"ip=127.0.55.6 tls=TLSv1\.[23] dane=yes result=sent")

    def test_wrong_tlsa_defers(self):
        send(self.r, "not dane", ["y@wrongkey.example"])
        self.assertTrue(self.r.wait_log(r"rcpt=\"y@wrongkey.example\" .*result=deferred .*"
                                        r"reply=\"451 4.4.1 TLS handshake .*DANE",
                                        timeout=10), self.r.log())
        self.assertEqual(self.rx.got, [])


if __name__ == "__main__":
    unittest.main()
