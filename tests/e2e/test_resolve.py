#!/usr/bin/python3
"""The resolver (engine/delivery/resolve.c) against real DNS servers on
loopback: nsd serving the zones below (one of them DNSSEC-signed, with one
signature broken on purpose), a validating unbound in front of it for the
recursive case, and a server that never answers.

The resolver is driven through vmrelay-dns ($VMRELAY_BUILD/engine/delivery),
which starts every query given at once and prints one JSON line per query.
"""
import json
import os
import subprocess
import unittest

from dnsserver import Nsd, Silent, Unbound

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("VMRELAY_BUILD", os.path.join(ROOT, "build"))
TOOL = os.path.join(BUILD, "engine", "delivery", "vmrelay-dns")

HASH = "0123456789abcdef" * 4

ZONES = {
    "mail.example": """
        @        MX 10 a
        @        MX 10 b
        @        MX 10 c
        @        MX 20 backup
        @        MX 5  gone
        a        A 127.0.0.11
        b        A 127.0.0.12
        c        A 127.0.0.13
        backup   A 127.0.0.14
        backup   AAAA ::1
        nomx     A 127.0.0.15
        nomx     AAAA ::1
        onlytxt  TXT "no mail here"
        null     MX 0 .
        viacname MX 10 alias
        alias    CNAME real
        real     A 127.0.0.16
        dup      MX 30 a
        dup      MX 10 a
        _25._tcp.a TLSA 3 1 1 %s
        spf      TXT "v=spf1 include:spf.relay.example" " ~all"
        sel._domainkey CNAME sel.mail.example.keys.relay.example.
    """ % HASH,
    "dane.example": """
        @        MX 10 mx
        mx       A 127.0.0.21
        _25._tcp.mx  TLSA 3 1 1 %s
        _25._tcp.bad TLSA 3 1 1 %s
        bad      A 127.0.0.22
    """ % (HASH, HASH),
}

MANY = 1000


def many_addr(i):
    return "127.1.%d.%d" % (i // 250, i % 250 + 1)


ZONES["many.example"] = "\n".join("d%d MX 10 mx%d\nmx%d A %s" % (i, i, i, many_addr(i))
                                   for i in range(MANY))


def resolve(server, *queries, anchor=None, timeout_ms=5000):
    """[(type, name), ...] -> one dict per query, in order."""
    args = [TOOL, "-s", server, "-t", str(timeout_ms)]
    if anchor:
        args += ["-a", anchor]
    for t, n in queries:
        args += [t, n]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError("vmrelay-dns exited %d: %s" % (out.returncode, out.stderr))
    return [json.loads(line) for line in out.stdout.splitlines()]


def one(server, rtype, name, **kw):
    return resolve(server, (rtype, name), **kw)[0]


@unittest.skipUnless(os.path.exists(TOOL), "vmrelay-dns not built")
class ResolveTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.nsd = Nsd(ZONES, signed=["dane.example"],
                      tamper=[("_25._tcp.bad.dane.example", "TLSA")]).start()
        cls.dns = cls.nsd.address

    @classmethod
    def tearDownClass(cls):
        cls.nsd.stop()

    def test_mx_by_preference_shuffled_within_one(self):
        results = resolve(self.dns, *[("mx", "mail.example")] * 40)
        orders = set()
        for r in results:
            self.assertEqual(r["status"], "ok", r["why"])
            self.assertFalse(r["implicit"])
            hosts = r["hosts"]
            self.assertEqual([h["pref"] for h in hosts], [5, 10, 10, 10, 20])
            # the 5 has no address: listed, failed, and the rest still tried
            self.assertEqual(hosts[0]["name"], "gone.mail.example")
            self.assertEqual(hosts[0]["status"], "nxdomain")
            self.assertEqual(hosts[0]["addrs"], [])
            self.assertEqual(sorted(h["name"] for h in hosts[1:4]),
                             ["a.mail.example", "b.mail.example", "c.mail.example"])
            self.assertEqual(hosts[4], {"name": "backup.mail.example", "pref": 20,
                                        "status": "ok", "secure": False,
                                        "addrs": ["127.0.0.14", "::1"]})
            orders.add(tuple(h["name"] for h in hosts[1:4]))
        # 40 draws of 6 orders: all alike has odds of 6^-39
        self.assertGreater(len(orders), 1)

    def test_host_listed_twice_keeps_best_preference(self):
        r = one(self.dns, "mx", "dup.mail.example")
        self.assertEqual([(h["name"], h["pref"]) for h in r["hosts"]],
                         [("a.mail.example", 10)])

    def test_no_mx_falls_back_to_address(self):
        r = one(self.dns, "mx", "nomx.mail.example")
        self.assertEqual(r["status"], "ok", r["why"])
        self.assertTrue(r["implicit"])
        self.assertEqual([(h["name"], h["pref"], h["addrs"]) for h in r["hosts"]],
                         [("nomx.mail.example", 0, ["127.0.0.15", "::1"])])

    def test_no_mx_and_no_address_is_permanent(self):
        r = one(self.dns, "mx", "onlytxt.mail.example")
        self.assertEqual(r["status"], "nodata")
        self.assertEqual(r["why"], "onlytxt.mail.example has no MX and no address")

    def test_null_mx(self):
        r = one(self.dns, "mx", "null.mail.example")
        self.assertEqual(r["status"], "nullmx")
        self.assertEqual(r["hosts"], [])
        self.assertIn("null MX", r["why"])

    def test_nxdomain_is_permanent(self):
        r = one(self.dns, "mx", "nowhere.mail.example")
        self.assertEqual(r["status"], "nxdomain")
        self.assertEqual(r["why"], "MX nowhere.mail.example: no such domain")

    def test_refused_zone_is_temporary(self):
        # nsd refuses names outside its zones; the forwarder's failure is a
        # reason to retry, not to bounce
        r = one(self.dns, "mx", "elsewhere.example.org")
        self.assertEqual(r["status"], "tempfail")
        self.assertTrue(r["why"].startswith("MX elsewhere.example.org: "), r["why"])

    def test_silent_server_times_out(self):
        with Silent() as silent:
            r = one(silent.address, "mx", "mail.example", timeout_ms=700)
        self.assertEqual(r["status"], "tempfail")
        self.assertEqual(r["why"], "MX mail.example: no answer within 700 ms")

    def test_cname_mx_target_resolves(self):
        r = one(self.dns, "mx", "viacname.mail.example")
        self.assertEqual(r["status"], "ok", r["why"])
        self.assertEqual([(h["name"], h["addrs"]) for h in r["hosts"]],
                         [("alias.mail.example", ["127.0.0.16"])])

    def test_many_queries_in_flight(self):
        # 1000 domains, each its own MX host and address: every answer
        # must reach its own query, all of them out at once
        queries = [("mx", "d%d.many.example" % i) for i in range(MANY)]
        results = resolve(self.dns, *queries)
        self.assertEqual(len(results), MANY)
        for i, r in enumerate(results):
            self.assertEqual(r["status"], "ok", r["why"])
            self.assertEqual([(h["name"], h["addrs"]) for h in r["hosts"]],
                             [("mx%d.many.example" % i, [many_addr(i)])])

    def test_txt_and_cname(self):
        txt, cname, none = resolve(self.dns, ("txt", "spf.mail.example"),
                                   ("cname", "sel._domainkey.mail.example"),
                                   ("cname", "a.mail.example"))
        self.assertEqual(txt["records"], ["v=spf1 include:spf.relay.example ~all"])
        self.assertEqual(cname["target"], "sel.mail.example.keys.relay.example")
        self.assertEqual(none["status"], "nodata")

    def test_tlsa_secure_insecure_bogus(self):
        anchor = self.nsd.trust_anchor
        secure, bogus, insecure, absent, mx = resolve(
            self.dns, ("tlsa", "mx.dane.example"), ("tlsa", "bad.dane.example"),
            ("tlsa", "a.mail.example"), ("tlsa", "b.mail.example"),
            ("mx", "dane.example"), anchor=anchor)
        self.assertEqual((secure["status"], secure["secure"]), ("ok", True), secure["why"])
        self.assertEqual(secure["records"],
                         [{"usage": 3, "selector": 1, "mtype": 1, "data": HASH}])
        # RFC 7672: a bogus TLSA answer is a temporary failure, never "no TLSA"
        self.assertEqual(bogus["status"], "tempfail")
        self.assertEqual(bogus["records"], [])
        self.assertIn("DNSSEC validation failed", bogus["why"])
        # an unsigned zone's TLSA is there but does not count for DANE
        self.assertEqual((insecure["status"], insecure["secure"]), ("ok", False))
        self.assertEqual(absent["status"], "nxdomain")
        self.assertTrue(mx["secure"])
        self.assertTrue(mx["hosts"][0]["secure"])

    def test_without_trust_anchor_nothing_is_secure(self):
        r = one(self.dns, "tlsa", "mx.dane.example")
        self.assertEqual((r["status"], r["secure"]), ("ok", False))

    def test_through_validating_recursive_server(self):
        with Unbound(self.nsd) as unbound:
            mx, secure, bogus = resolve(unbound.address, ("mx", "mail.example"),
                                        ("tlsa", "mx.dane.example"),
                                        ("tlsa", "bad.dane.example"),
                                        anchor=self.nsd.trust_anchor)
        self.assertEqual(mx["status"], "ok", mx["why"])
        self.assertEqual([h["pref"] for h in mx["hosts"]], [5, 10, 10, 10, 20])
        self.assertEqual((secure["status"], secure["secure"]), ("ok", True), secure["why"])
        self.assertEqual(bogus["status"], "tempfail")


if __name__ == "__main__":
    unittest.main()
