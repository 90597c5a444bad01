#!/usr/bin/python3
"""The DNS wizard end to end: a relay whose resolver asks nsd (on loopback)
serving the customer's zone; vmrelayctl dns-records prints what to add,
dns-check judges what the zone holds - before the records are added, after
(the zone file rewritten and nsd reloaded), and with each record wrong; a
verified domain whose records disappear is un-verified only after repeated
failing checks over time, and a lookup with no answer never counts.

The ownership token and the DKIM keys' TXT are computed here independently
(Python's hmac, openssl pkey) from what wizard.h and RFC 6376 / 8463 say.
"""
import base64
import hashlib
import hmac
import json
import os
import smtplib
import subprocess
import tempfile
import unittest

from dnsserver import Nsd, Silent
from relay import ROOT, Relay

DOMAIN = "cust.example"
PENDING = "pending.example"
SPF_NAME = "spf.relay.example"
KEY_ZONE = "keys.relay.example"
SECRET = b"e2e-wizard-secret-0123456789abcdef"
KEYS = os.path.join(ROOT, "tests", "data", "dkim")

ACCOUNTS = [
    {"id": "vps1", "ips": ["127.0.0.1", "::1"], "hostname": "vps1.cust.example",
     "domains": [DOMAIN, {"name": PENDING, "verified": False}],
     "dkim": {DOMAIN: [
         {"selector": "ed1", "algorithm": "ed25519-sha256",
          "key": os.path.join(KEYS, "ed25519.pem")},
         {"selector": "rsa1", "algorithm": "rsa-sha256",
          "key": os.path.join(KEYS, "rsa2048.pem")}]}},
    {"id": "vps2", "ips": ["192.0.2.10"], "domains": ["other.example"]},
]


def token(account, domain):
    key = hmac.new(SECRET, b"vmrelay-account:" + account.encode(), hashlib.sha256).digest()
    return "vmrelay-auth=" + hmac.new(key, domain.encode(), hashlib.sha256).hexdigest()


def public_key_der(pem):
    return subprocess.run(["openssl", "pkey", "-in", pem, "-pubout", "-outform", "DER"],
                          check=True, capture_output=True).stdout


def dkim_txt(alg, pem):
    der = public_key_der(pem)
    # RFC 8463: an Ed25519 p= is the bare 32-octet key; RSA's is the SPKI
    raw = der[-32:] if alg == "ed25519" else der
    return "v=DKIM1; k=%s; p=%s" % (alg, base64.b64encode(raw).decode())


class WizardBase(unittest.TestCase):
    """A relay resolving through nsd serving ZONES, with [dns] set up
    (and DNS_EXTRA added to that section)."""
    ZONES = {}
    DNS_EXTRA = ""

    @classmethod
    def setUpClass(cls):
        cls.nsd = Nsd(cls.ZONES).start()
        cls.dir = tempfile.mkdtemp(prefix="vr-wizard-")
        secret = os.path.join(cls.dir, "dns.secret")
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(SECRET + b"\n")
        cls.r = Relay(workers=1, tls=False, accounts=ACCOUNTS)
        with open(cls.r.config_path, "a") as f:
            f.write("\n[delivery]\nresolver = %s\ndns_timeout_ms = 3000\n"
                    "\n[dns]\nspf_name = %s\nkey_zone = %s\nsecret_file = %s\n"
                    % (cls.nsd.address, SPF_NAME, KEY_ZONE, secret) + cls.DNS_EXTRA)
        cls.r.start()

    @classmethod
    def tearDownClass(cls):
        cls.r.stop()
        cls.r.cleanup()
        cls.nsd.stop()
        subprocess.run(["rm", "-rf", cls.dir])


class WizardTest(WizardBase):
    ZONES = {DOMAIN: "www A 127.0.0.80", PENDING: "www A 127.0.0.81"}

    def ctl(self, *args, human=False):
        out = self.r.ctl(*args, human=human)
        if human:
            return out
        return json.loads(out.stdout)

    def check(self):
        """dns-check DOMAIN as {name-or-kind: record}."""
        reply = self.ctl("dns-check", DOMAIN)
        self.assertTrue(reply["ok"], reply)
        return reply, {r["name"] if r["kind"] != "spf" else "spf": r for r in reply["records"]}

    def expected(self):
        return [
            ("spf", DOMAIN, "TXT", "v=spf1 include:%s ~all" % SPF_NAME),
            ("dkim", "ed1._domainkey." + DOMAIN, "CNAME", "ed1.%s.%s" % (DOMAIN, KEY_ZONE)),
            ("dkim", "rsa1._domainkey." + DOMAIN, "CNAME", "rsa1.%s.%s" % (DOMAIN, KEY_ZONE)),
            ("auth", "_vmrelay-auth." + DOMAIN, "TXT", token("vps1", DOMAIN)),
        ]

    def test_1_records(self):
        reply = self.ctl("dns-records", DOMAIN)
        self.assertTrue(reply["ok"], reply)
        self.assertEqual((reply["domain"], reply["account"], reply["verified"]),
                         (DOMAIN, "vps1", True))
        got = [(r["kind"], r["name"], r["type"], r["value"]) for r in reply["records"]]
        self.assertEqual(got, self.expected())
        keys = {r["name"]: r.get("target_txt") for r in reply["records"]}
        self.assertEqual(keys["ed1._domainkey." + DOMAIN],
                         dkim_txt("ed25519", os.path.join(KEYS, "ed25519.pem")))
        self.assertEqual(keys["rsa1._domainkey." + DOMAIN],
                         dkim_txt("rsa", os.path.join(KEYS, "rsa2048.pem")))
        # the RSA key's TXT is over 255 octets: split into strings for the zone
        self.assertIn('rsa1.%s.%s. 3600 IN TXT "v=DKIM1; k=rsa; p=' % (DOMAIN, KEY_ZONE),
                      reply["operator_zone"])
        self.assertRegex(reply["operator_zone"], r'"[^"]{255}" "')

        human = self.ctl("dns-records", DOMAIN, human=True)
        self.assertEqual(human.returncode, 0, human.stderr)
        self.assertIn("ed1._domainkey.%s. 3600 IN CNAME ed1.%s.%s.\n" % (DOMAIN, DOMAIN, KEY_ZONE),
                      human.stdout)
        self.assertIn('_vmrelay-auth.%s. 3600 IN TXT "%s"\n' % (DOMAIN, token("vps1", DOMAIN)),
                      human.stdout)

    def test_2_missing_then_ok_then_wrong(self):
        self.nsd.set_zone(DOMAIN, "www A 127.0.0.80")
        reply, recs = self.check()
        self.assertFalse(reply["all_ok"])
        self.assertEqual({k: r["verdict"] for k, r in recs.items()},
                         {"spf": "missing", "ed1._domainkey." + DOMAIN: "missing",
                          "rsa1._domainkey." + DOMAIN: "missing",
                          "_vmrelay-auth." + DOMAIN: "missing"})

        # the zone snippet dns-records prints, pasted as is
        zone = self.ctl("dns-records", DOMAIN)["zone"]
        self.nsd.set_zone(DOMAIN, "www A 127.0.0.80\n" + zone)
        reply, recs = self.check()
        self.assertTrue(reply["all_ok"], reply)
        self.assertTrue(all(r["verdict"] == "ok" for r in recs.values()))
        human = self.ctl("dns-check", DOMAIN, human=True)
        self.assertIn("all records check out", human.stdout)

        # each one wrong: its own SPF without us, a CNAME elsewhere, and
        # another account's token
        self.nsd.set_zone(DOMAIN, """
            @ TXT "v=spf1 mx -all"
            ed1._domainkey CNAME ed1.%s.keys.elsewhere.example.
            rsa1._domainkey TXT "v=DKIM1; k=rsa; p=pasted"
            _vmrelay-auth TXT "%s"
            """ % (DOMAIN, token("vps2", DOMAIN)))
        reply, recs = self.check()
        self.assertFalse(reply["all_ok"])
        self.assertEqual((recs["spf"]["verdict"], recs["spf"]["found"]),
                         ("wrong", "v=spf1 mx -all"))
        # merged advice: our include first, the domain's own terms kept
        self.assertEqual(recs["spf"]["value"], "v=spf1 include:%s mx -all" % SPF_NAME)
        ed1 = recs["ed1._domainkey." + DOMAIN]
        self.assertEqual((ed1["verdict"], ed1["found"]),
                         ("wrong", "ed1.%s.keys.elsewhere.example" % DOMAIN))
        # a key pasted as TXT is no CNAME: it would break at the next rotation
        self.assertEqual(recs["rsa1._domainkey." + DOMAIN]["verdict"], "missing")
        auth = recs["_vmrelay-auth." + DOMAIN]
        self.assertEqual((auth["verdict"], auth["found"]), ("wrong", token("vps2", DOMAIN)))
        human = self.ctl("dns-check", DOMAIN, human=True)
        self.assertIn("found:    v=spf1 mx -all", human.stdout)
        self.assertIn("some records do not check out", human.stdout)

        records = self.ctl("dns-records", DOMAIN)
        self.assertEqual(records["records"][0]["value"], "v=spf1 include:%s mx -all" % SPF_NAME)

    def mail_from(self, domain):
        with smtplib.SMTP("127.0.0.1", self.r.port, timeout=10) as s:
            s.ehlo("vps1.cust.example")
            return s.mail("user@" + domain)

    def test_3_pending_domain_usable_once_checked(self):
        code, text = self.mail_from(PENDING)
        self.assertEqual(code, 550)
        self.assertIn(b"pending verification", text)

        reply = self.ctl("dns-check", PENDING)
        self.assertEqual((reply["all_ok"], reply["verified"]), (False, False))
        self.assertNotIn("verified_now", reply)

        records = self.ctl("dns-records", PENDING)
        self.assertEqual([r["kind"] for r in records["records"]], ["spf", "auth"])
        self.assertEqual(records["records"][1]["value"], token("vps1", PENDING))
        self.nsd.set_zone(PENDING, records["zone"])
        reply = self.ctl("dns-check", PENDING)
        self.assertTrue(reply["all_ok"], reply)
        self.assertEqual((reply["verified"], reply["verified_now"]), (True, True))
        self.assertNotIn("verify_error", reply)

        # recorded where the relay reads who may send what: the accounts file
        with open(self.r.accounts_path) as f:
            vps1 = json.loads(f.readline())
        self.assertEqual(vps1["domains"][1], {"name": PENDING, "verified": True})
        self.assertEqual(vps1["dkim"], ACCOUNTS[0]["dkim"])
        self.r.wait_log(r"event=ctl_dns_check domain=%s account=vps1 all_ok=yes\n"
                        r".* event=dns_verified domain=%s account=vps1" % (PENDING, PENDING))
        self.assertEqual(self.mail_from(PENDING)[0], 250)

        # checked again: still verified, nothing rewritten
        before = os.stat(self.r.accounts_path).st_mtime_ns
        reply = self.ctl("dns-check", PENDING)
        self.assertEqual((reply["all_ok"], reply["verified"]), (True, True))
        self.assertNotIn("verified_now", reply)
        self.assertEqual(os.stat(self.r.accounts_path).st_mtime_ns, before)

    def test_refusals(self):
        reply = self.ctl("dns-records", "nobody.example")
        self.assertEqual(reply, {"ok": False,
                                 "error": "no account lists the domain 'nobody.example'"})
        reply = self.ctl("dns-check")
        self.assertEqual(reply["error"], "usage: dns-check DOMAIN")


class WizardUnverifyTest(WizardBase):
    """A verified domain whose records disappear: counted, reported and
    logged at each check, un-verified only after [dns] unverify_checks
    checks in a row, the first unverify_after_s ago; a passing check clears
    the count, and verifies the domain again once it was un-verified."""

    ZONES = {DOMAIN: "www A 127.0.0.80"}
    DNS_EXTRA = "unverify_checks = 2\nunverify_after_s = 600\n"

    def check(self):
        reply = json.loads(self.r.ctl("dns-check", DOMAIN).stdout)
        self.assertTrue(reply["ok"], reply)
        return reply

    def entry(self):
        """DOMAIN's entry in vps1's line of the accounts file."""
        with open(self.r.accounts_path) as f:
            return json.loads(f.readline())["domains"][0]

    def set_entry(self, entry):
        with open(self.r.accounts_path) as f:
            lines = f.readlines()
        vps1 = json.loads(lines[0])
        vps1["domains"][0] = entry
        lines[0] = json.dumps(vps1) + "\n"
        with open(self.r.accounts_path, "w") as f:
            f.writelines(lines)

    def mail_from(self):
        with smtplib.SMTP("127.0.0.1", self.r.port, timeout=10) as s:
            s.ehlo("vps1.cust.example")
            return s.mail("user@" + DOMAIN)

    def test_records_gone_then_unverified(self):
        good = "www A 127.0.0.80\n" + json.loads(self.r.ctl("dns-records", DOMAIN).stdout)["zone"]
        self.nsd.set_zone(DOMAIN, good)
        reply = self.check()
        self.assertEqual((reply["all_ok"], reply["verified"]), (True, True))
        self.assertEqual(self.entry(), DOMAIN)       # nothing to record

        # the records vanish: reported and counted, still verified
        self.nsd.set_zone(DOMAIN, "www A 127.0.0.80")
        reply = self.check()
        self.assertEqual((reply["all_ok"], reply["verified"]), (False, True))
        self.assertEqual((reply["failing"]["checks"], reply["failing"]["unverify_checks"],
                          reply["failing"]["unverify_after_s"]), (1, 2, 600))
        since = reply["failing"]["since"]
        self.assertEqual(self.entry(), {"name": DOMAIN, "check_failures": 1,
                                        "failing_since": since})
        self.r.wait_log(r"warn event=dns_check_failing domain=%s account=vps1 "
                        r"checks=1 since=%d " % (DOMAIN, since))
        self.assertEqual(self.mail_from()[0], 250)

        # back: the count is cleared
        self.nsd.set_zone(DOMAIN, good)
        reply = self.check()
        self.assertEqual((reply["all_ok"], reply["verified"]), (True, True))
        self.assertNotIn("failing", reply)
        self.assertEqual(self.entry(), {"name": DOMAIN})

        # gone again, twice: the count reaches 2, but the first failure is
        # not 600 s old, so the domain stays usable
        self.nsd.set_zone(DOMAIN, "www A 127.0.0.80")
        self.check()
        reply = self.check()
        self.assertEqual((reply["verified"], reply["failing"]["checks"]), (True, 2))
        self.assertNotIn("unverified_now", reply)
        self.assertEqual(self.mail_from()[0], 250)

        # as if the first failure had been an hour ago: un-verified now
        entry = self.entry()
        entry["failing_since"] -= 3600
        self.set_entry(entry)
        reply = self.check()
        self.assertEqual((reply["verified"], reply["unverified_now"]), (False, True))
        self.assertNotIn("failing", reply)
        self.assertEqual(self.entry(), {"name": DOMAIN, "verified": False})
        self.r.wait_log(r"warn event=dns_unverified domain=%s account=vps1 "
                        r"checks=3 since=%d\n" % (DOMAIN, entry["failing_since"]))
        code, text = self.mail_from()
        self.assertEqual(code, 550)
        self.assertIn(b"pending verification", text)

        # the records are back: verified again, as any pending domain
        self.nsd.set_zone(DOMAIN, good)
        reply = self.check()
        self.assertEqual((reply["verified"], reply["verified_now"]), (True, True))
        self.assertEqual(self.entry(), {"name": DOMAIN, "verified": True})
        self.assertEqual(self.mail_from()[0], 250)


class WizardNoDnsTest(unittest.TestCase):
    """The relay's resolver gets no answer: nothing is judged missing."""

    def test_unknown_when_dns_does_not_answer(self):
        d = tempfile.mkdtemp(prefix="vr-wizard-")
        secret = os.path.join(d, "dns.secret")
        with open(os.open(secret, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(SECRET)
        r = Relay(workers=1, tls=False, accounts=ACCOUNTS)
        try:
            with Silent() as silent:
                with open(r.config_path, "a") as f:
                    f.write("\n[delivery]\nresolver = %s\ndns_timeout_ms = 400\n"
                            "\n[dns]\nspf_name = %s\nkey_zone = %s\nsecret_file = %s\n"
                            "unverify_checks = 1\nunverify_after_s = 0\n"
                            % (silent.address, SPF_NAME, KEY_ZONE, secret))
                r.start()
                reply = json.loads(r.ctl("dns-check", DOMAIN).stdout)
                self.assertFalse(reply["all_ok"])
                for rec in reply["records"]:
                    self.assertEqual(rec["verdict"], "unknown", rec)
                    self.assertRegex(rec["found"], r"^(TXT|CNAME) \S+: no answer within 400 ms$")
                # no answer is no failure: the domain stays verified, uncounted
                self.assertTrue(reply["verified"])
                self.assertNotIn("failing", reply)
                with open(r.accounts_path) as f:
                    self.assertEqual(json.loads(f.readline())["domains"][0], DOMAIN)
                reply = json.loads(r.ctl("dns-records", DOMAIN).stdout)
                self.assertEqual(reply["records"][0]["value"], "v=spf1 include:%s ~all" % SPF_NAME)
                self.assertIn("could not be read", reply["note"])
                r.stop()
        finally:
            r.cleanup()
            subprocess.run(["rm", "-rf", d])


class WizardOffTest(unittest.TestCase):
    def test_without_dns_section(self):
        with Relay(workers=1, tls=False) as r:
            out = r.ctl("dns-records", "example.com")
            self.assertEqual(json.loads(out.stdout)["error"],
                             "the DNS wizard is off: set [dns] spf_name, key_zone and "
                             "secret_file")

    def test_secret_readable_by_others_refused_at_start(self):
        d = tempfile.mkdtemp(prefix="vr-wizard-")
        secret = os.path.join(d, "dns.secret")
        with open(secret, "wb") as f:
            f.write(SECRET)
        os.chmod(secret, 0o644)
        r = Relay(workers=1, tls=False)
        try:
            with open(r.config_path, "a") as f:
                f.write("\n[dns]\nspf_name = %s\nkey_zone = %s\nsecret_file = %s\n"
                        % (SPF_NAME, KEY_ZONE, secret))
            with self.assertRaises(RuntimeError) as e:
                r.start(timeout=5)
            self.assertIn("secret_file %s: readable by others (mode 0644)" % secret,
                          str(e.exception))
        finally:
            r.cleanup()
            subprocess.run(["rm", "-rf", d])


if __name__ == "__main__":
    unittest.main()
