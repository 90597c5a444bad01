"""The operator's seat (issue 6), end to end against vmrelay --io kernel:
every command of the control socket through vmrelayctl, JSON and --human,
and its refusals: a peer that is neither root nor in the control group,
malformed JSON, an unknown command, a quota above the cap, a reload with a
broken accounts file. The metrics, from the control socket and scraped
over HTTP, are parsed with Prometheus's own parser and must agree with
stats. drain ends the relay with exit status 0 after
the session in flight has finished. queue list's limit, and vps show's
queue depth as deliveries, holds and deletes change it.

Accounts: vps1 (127.0.0.1) sends as example.com; vps2 authenticates; bulk
is a third account the reload test adds, vps3 (127.0.0.3) one that
account add adds and account remove removes.
"""

import http.client
import json
import os
import re
import smtplib
import socket
import subprocess
import time
import unittest
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import relay
from relay import OUTSIDER, Relay, message
from test_delivery import Receiver

CAP = 5000          # [limits] per_day_max of these relays
LIMITS = dict(relay.LIMITS, per_day_max=CAP, per_day=1000)


def send(r, n=1, rcpts=("a@example.net",), source=None):
    """n messages from vps1; returns how many recipients took."""
    took = 0
    for i in range(n):
        with smtplib.SMTP("127.0.0.1", r.port, timeout=10,
                          source_address=(source, 0) if source else None) as s:
            s.ehlo("vps1.example.com")
            s.mail("user@example.com")
            ok = [t for t in rcpts if s.rcpt(t)[0] == 250]
            if ok:
                s.data(message("ctl %d" % i, to=ok[0]))
            took += len(ok)
    return took


class Ctl(unittest.TestCase):
    """What the test classes share: commands against cls.r."""

    def ok(self, *args):
        """The reply of a command that must succeed, parsed."""
        p = self.r.ctl(*args)
        self.assertEqual(p.returncode, 0, "%s: %s %s" % (args, p.stdout, p.stderr))
        reply = json.loads(p.stdout)
        self.assertIs(reply["ok"], True)
        return reply

    def refused(self, *args, status=1):
        """The error of a command that must fail."""
        p = self.r.ctl(*args)
        self.assertEqual(p.returncode, status, "%s: %s %s" % (args, p.stdout, p.stderr))
        if status == 2:
            return p.stderr
        reply = json.loads(p.stdout)
        self.assertIs(reply["ok"], False)
        return reply["error"]

    def raw(self, data):
        """Reply lines to raw bytes sent on the control socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(self.r.ctl_path)
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return [json.loads(line) for line in out.decode().splitlines()]


class CtlTest(Ctl):

    @classmethod
    def setUpClass(cls):
        cls.r = Relay(workers=2, limits=LIMITS,
                      relay_keys={"metrics_listen": "127.0.0.1:0"}).start()
        cls.metrics_url = "http://%s/metrics" % re.search(
            r"event=metrics_listen addr=(\S+)", cls.r.log()).group(1)

    @classmethod
    def tearDownClass(cls):
        cls.r.stop()
        cls.r.cleanup()

    def test_socket_is_0660(self):
        self.assertEqual(os.stat(self.r.ctl_path).st_mode & 0o777, 0o660)

    def test_stats_count_what_happened(self):
        before = self.ok("stats")["total"]
        self.assertEqual(send(self.r, 2), 2)
        with self.r.connect(source=OUTSIDER) as c:       # no account: refused at MAIL
            c.hello()
            c.expect(550, "MAIL FROM:<x@example.com>\r\n")
        st = self.ok("stats")
        total = st["total"]
        self.assertEqual(total["messages_accepted"] - before["messages_accepted"], 2)
        self.assertEqual(total["refused_relay"] - before["refused_relay"], 1)
        self.assertGreaterEqual(total["connections"] - before["connections"], 3)
        self.assertEqual(len(st["workers"]), 2)
        for k, v in total.items():
            self.assertEqual(v, sum(w[k] for w in st["workers"]), k)
        self.assertGreaterEqual(st["spool"]["committed"], 2)
        p = self.r.ctl("stats", human=True)
        self.assertEqual(p.returncode, 0)
        line = [l for l in p.stdout.splitlines() if l.startswith("messages_accepted ")][0]
        self.assertEqual(int(line.split()[1]), total["messages_accepted"])

    def test_quota_show_set_reset(self):
        self.ok("quota", "reset", "vps1")
        self.assertEqual(send(self.r, 1, rcpts=("a@example.net", "b@example.net")), 2)
        by_ip = self.ok("quota", "show", "127.0.0.1")
        self.assertEqual(by_ip["account"], "vps1")
        day = by_ip["windows"]["day"]
        self.assertEqual((day["used"], day["limit"]), (2, 1000))
        self.assertEqual(self.ok("quota", "show", "vps1")["windows"], by_ip["windows"])
        human = self.r.ctl("quota", "show", "vps1", human=True).stdout
        self.assertRegex(human, r"(?m)^day +2 +1000 ")

        # the cap, and nonsense, change nothing
        self.assertIn("above the cap ([limits] per_day_max = 5000)",
                      self.refused("quota", "set", "vps1", str(CAP + 1)))
        self.assertIn("not a number", self.refused("quota", "set", "vps1", "ten"))
        self.assertIn("unknown account 'nobody'", self.refused("quota", "set", "nobody", "5"))
        self.assertIn("usage: quota set ID N", self.refused("quota", "set", "vps1"))
        self.assertEqual(self.ok("quota", "show", "vps1")["windows"]["day"]["limit"], 1000)

        # a quota of 3 leaves one slot: the second recipient is deferred
        self.assertEqual(self.ok("quota", "set", "vps1", "3")["daily_quota"], 3)
        self.assertEqual(send(self.r, 1, rcpts=("c@example.net", "d@example.net")), 1)
        self.assertFalse(self.ok("quota", "show", "vps1")["may_send"])
        self.ok("quota", "reset", "vps1")
        self.assertEqual(self.ok("quota", "show", "vps1")["windows"]["day"]["used"], 0)
        self.assertEqual(send(self.r, 1), 1)
        self.ok("quota", "set", "vps1", "1000")
        self.assertIn("no account sends from 198.51.100.7",
                      self.refused("quota", "show", "198.51.100.7"))

    def test_accounts(self):
        ids = [a["id"] for a in self.ok("account", "list")["accounts"]]
        self.assertEqual(ids[:2], ["vps1", "vps2"])
        a = self.ok("account", "show", "vps2")["account"]
        self.assertEqual(a["hostname"], "vps2.example.org")
        self.assertEqual(a["domains"], [{"name": "example.org", "verified": True}])
        self.assertIs(a["auth"], True)
        self.assertIn("unknown account 'vps9'", self.refused("account", "show", "vps9"))
        self.assertRegex(self.r.ctl("account", "list", human=True).stdout,
                         r"(?m)^vps1 +vps1\.example\.com +1000 +defer +example\.com$")

    def test_reload(self):
        good = relay.ACCOUNTS + [{"id": "bulk", "ips": ["192.0.2.99"], "daily_quota": 50}]
        try:
            self.r.write_accounts(good)
            self.assertEqual(self.ok("reload")["accounts"], 3)
            self.assertEqual(self.ok("quota", "show", "bulk")["windows"]["day"]["limit"], 50)
            with open(self.r.accounts_path, "a") as f:
                f.write('{"id": "broken", "ips": ["192.0.2.98"], "colour": "red"}\n')
            err = self.refused("reload")
            self.assertRegex(err, r"accounts\.jsonl:4: .*colour")
            self.assertIn("event=reload_failed", self.r.log())
            # the old table stays in force
            self.assertEqual(len(self.ok("account", "list")["accounts"]), 3)
            self.assertIn("unknown account 'broken'", self.refused("account", "show", "broken"))
        finally:
            self.r.write_accounts(relay.ACCOUNTS)
            self.ok("reload")

    def accounts_file(self):
        with open(self.r.accounts_path) as f:
            return [json.loads(l) for l in f if l.strip()]

    def mail_from_vps3(self):
        """MAIL FROM's reply code from 127.0.0.3 as vps3's hostname."""
        with smtplib.SMTP("127.0.0.1", self.r.port, timeout=10,
                          source_address=("127.0.0.3", 0)) as s:
            s.ehlo("vps3.example.com")
            return s.mail("u@vps3.example.com")[0]

    def test_account_add_remove(self):
        new = '{"id": "vps3", "ips": ["127.0.0.3"], "hostname": "vps3.example.com"}'
        mode = os.stat(self.r.accounts_path).st_mode & 0o777
        try:
            self.assertEqual(self.mail_from_vps3(), 550)     # nobody's address yet
            reply = self.ok("account", "add", new)
            self.assertEqual((reply["account"], reply["accounts"]), ("vps3", 3))
            self.assertEqual(self.accounts_file()[-1], json.loads(new))
            self.assertEqual(self.ok("account", "show", "vps3")["account"]["hostname"],
                             "vps3.example.com")
            # in force at once: the new address may send as its hostname
            self.assertEqual(self.mail_from_vps3(), 250)

            # refusals leave the file as it was
            before = open(self.r.accounts_path).read()
            for line, why in ((new,
                               r"accounts\.jsonl:4: duplicate id 'vps3' \(first on line 3\)"),
                              ('{"id": "vps4", "ips": ["127.0.0.3"]}',
                               r"accounts\.jsonl:4: 'ips': '127\.0\.0\.3' is already on "
                               r"line 3 \(account 'vps3'\)"),
                              ('{"id": "vps4", "colour": "red"}', r"accounts\.jsonl:4: .*colour"),
                              ('{"id": "vps4", "daily_quota": %d}' % (CAP + 1), r"daily_quota"),
                              ('{"id": "vps4"', r"bad JSON"),
                              ('["vps4"]', r"JSON object with an \"id\""),
                              ('{"id": "vps4"}\n{"id": "vps5"}', r"one line")):
                self.assertRegex(self.refused("account", "add", line), why)
            self.assertEqual(open(self.r.accounts_path).read(), before)
            self.assertIn("unknown account 'vps9'", self.refused("account", "remove", "vps9"))
            self.assertEqual(open(self.r.accounts_path).read(), before)
            self.assertEqual(len(self.ok("account", "list")["accounts"]), 3)

            reply = self.ok("account", "remove", "vps3")
            self.assertEqual((reply["account"], reply["accounts"]), ("vps3", 2))
            self.assertEqual([a["id"] for a in self.accounts_file()], ["vps1", "vps2"])
            self.assertIn("unknown account 'vps3'", self.refused("account", "show", "vps3"))
            self.assertEqual(self.mail_from_vps3(), 550)
            self.assertIn("event=ctl_account_remove account=vps3", self.r.log())
            self.assertEqual(os.stat(self.r.accounts_path).st_mode & 0o777, mode)
            leftovers = [f for f in os.listdir(os.path.dirname(self.r.accounts_path))
                         if f.startswith(".vmrelay-accounts")]
            self.assertEqual(leftovers, [])
        finally:
            self.r.write_accounts(relay.ACCOUNTS)
            self.ok("reload")

    def test_vps_show(self):
        self.ok("quota", "reset", "vps1")
        self.assertEqual(send(self.r, 1), 1)
        by_ip = self.ok("vps", "show", "127.0.0.1")
        self.assertEqual(by_ip["account"]["id"], "vps1")
        self.assertEqual(by_ip["account"]["domains"], [{"name": "example.com", "verified": True}])
        self.assertEqual(by_ip["windows"]["day"]["used"], 1)
        self.assertIs(by_ip["may_send"], True)
        self.assertEqual(self.ok("vps", "show", "vps1")["account"], by_ip["account"])
        human = self.r.ctl("vps", "show", "vps1", human=True).stdout
        self.assertRegex(human, r"(?m)^id: vps1$")
        self.assertRegex(human, r"(?m)^may_send: yes$")
        self.assertRegex(human, r"(?m)^day +1 +1000 ")
        self.assertIn("unknown account 'vps9'", self.refused("vps", "show", "vps9"))
        self.assertIn("no account sends from 198.51.100.7",
                      self.refused("vps", "show", "198.51.100.7"))
        self.assertIn("usage: vps show ID|IP", self.refused("vps", "show"))

    def test_vps_show_queue_refusals_remote_errors(self):
        """vps show's live view: the mail it has waiting (here all of it:
        delivery goes to a closed port), its last refusals with their reply,
        and what the remote side said of its mail."""
        self.ok("quota", "reset", "vps1")
        before = self.ok("vps", "show", "vps1")["queue"]
        self.assertEqual(send(self.r, 1, rcpts=("q1@example.net", "q2@example.net")), 2)
        with smtplib.SMTP("127.0.0.1", self.r.port, timeout=10) as s:
            s.ehlo("vps1.example.com")
            code, text = s.mail("user@foreign.example")
        self.assertEqual(code, 550)
        # the delivery threads try the closed port and defer
        deadline = time.monotonic() + 10
        while True:
            show = self.ok("vps", "show", "vps1")
            if show["remote_errors"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        q = show["queue"]
        self.assertEqual((q["messages"] - before["messages"],
                          q["recipients"] - before["recipients"]), (1, 2))
        self.assertEqual(q["held"], 0)
        ref = show["refusals"][0]
        self.assertEqual(ref["code"], 550)
        self.assertIn("sender domain foreign.example is not registered for VPS vps1",
                      ref["text"])
        self.assertLess(abs(ref["at"] - time.time()), 30)
        err = show["remote_errors"][0]
        self.assertRegex(err["qid"], r"^[0-9A-Z]+$")
        self.assertIn(err["qid"], [m["qid"] for m in
                                   self.ok("queue", "list", "--vps", "vps1")["messages"]])
        self.assertTrue(err["text"])
        # held mail counts as held
        self.assertEqual(self.ok("queue", "hold", err["qid"])["done"], "held")
        try:
            q = self.ok("vps", "show", "127.0.0.1")["queue"]
            self.assertEqual((q["messages"], q["held"]), (show["queue"]["messages"], 1))
        finally:
            self.ok("queue", "release", err["qid"])
        # nobody else's refusals
        self.assertEqual(self.ok("vps", "show", "vps2")["refusals"], [])
        human = self.r.ctl("vps", "show", "vps1", human=True).stdout
        self.assertRegex(human, r"(?m)^queue: \d+ messages, \d+ recipients, 0 held$")
        self.assertRegex(human, r"(?m)^  \S+ \S+ 550 - +550 5\.7\.1 sender domain "
                                r"foreign\.example")

    def test_queue_list_filters(self):
        self.assertEqual(send(self.r, 1, rcpts=("x@filter-a.example",)), 1)
        self.assertEqual(send(self.r, 1, rcpts=("y@filter-b.example", "z@example.net")), 1 + 1)
        every = self.ok("queue", "list")["messages"]
        a = self.ok("queue", "list", "--domain", "FILTER-A.example")["messages"]
        b = self.ok("queue", "list", "--vps", "vps1", "--domain", "filter-b.example")
        self.assertEqual(len(a), 1)
        self.assertEqual(len(b["messages"]), 1)
        self.assertNotEqual(a[0]["qid"], b["messages"][0]["qid"])
        self.assertEqual(len(self.ok("queue", "list", "--vps", "vps1")["messages"]),
                         len([m for m in every if m["vps"] == "vps1"]))
        self.assertEqual(self.ok("queue", "list", "--vps", "vps2")["messages"], [])
        self.assertEqual(self.ok("queue", "list", "--domain", "nowhere.example")["messages"],
                         [])
        for args in (("--vps",), ("--colour", "red"), ("--vps", "a", "--vps", "b")):
            self.assertIn("usage: queue list [--vps ID] [--domain D]",
                          self.refused("queue", "list", *args))
        human = self.r.ctl("queue", "list", "--domain", "filter-a.example", human=True).stdout
        self.assertRegex(human, r"(?m)^1 message$")

    def test_bad_requests(self):
        replies = self.raw(b'{"cmd": "stats"\n[1,2]\n{"cmd": "stats", "args": [7]}\n'
                           b'\xff\xfe\n{"cmd":"stats"}\n')
        self.assertEqual(len(replies), 5)
        self.assertIn("malformed JSON", replies[0]["error"])
        self.assertIn('a request is {"cmd"', replies[1]["error"])
        self.assertIn("array of strings", replies[2]["error"])
        self.assertIn("malformed JSON", replies[3]["error"])
        self.assertIs(replies[4]["ok"], True)       # the connection survived all that
        long_line = self.raw(b"x" * 10000 + b"\n")
        self.assertEqual([r["error"] for r in long_line], ["request line too long"])
        self.assertIn("unknown command 'frobnicate'", self.refused("frobnicate"))
        self.assertIn("usage: stats", self.refused("stats", "now"))
        # the relay is unaffected
        self.assertEqual(send(self.r, 1), 1)

    def test_client_errors(self):
        p = subprocess.run([relay.VMRELAYCTL, "-s", self.r.ctl_path], capture_output=True,
                           text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("no command given", p.stderr)
        p = subprocess.run([relay.VMRELAYCTL, "-s", self.r.dir + "/nope.sock", "stats"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot reach the relay at %s/nope.sock: No such file" % self.r.dir,
                      p.stderr)
        p = self.r.ctl("quota", "set", "vps1", str(CAP + 1), human=True)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertIn("vmrelayctl: quota %d is above the cap" % (CAP + 1), p.stderr)

    def test_wrong_peer_refused(self):
        # the socket's mode keeps nobody out ...
        p = self.r.ctl("stats", user="nobody")
        self.assertEqual(p.returncode, 2)
        self.assertIn("Permission denied", p.stderr)
        # ... and were it opened up, the relay still checks who is calling
        os.chmod(self.r.ctl_path, 0o666)
        try:
            p = self.r.ctl("drain", user="nobody")
        finally:
            os.chmod(self.r.ctl_path, 0o660)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("permission denied", json.loads(p.stdout)["error"])
        self.assertRegex(self.r.log(), r"event=ctl_refused reason=credentials uid=65534 ")
        self.assertIsNone(self.r.proc.poll())      # not drained
        self.ok("stats")

    def scrape(self):
        with urllib.request.urlopen(self.metrics_url, timeout=10) as resp:
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.headers["Content-Type"],
                             "text/plain; version=0.0.4; charset=utf-8")
            return resp.read().decode()

    def settle_delivery(self):
        """The relay delivers in the background (here: tries a closed port
        and defers): wait until its counters stand still."""
        last = None
        for _ in range(50):
            d = self.ok("stats")["delivery"]
            if d == last and d["in_flight"] == 0 and d["connections"] == 0:
                return
            last = d
            time.sleep(0.1)

    def test_metrics_agree_with_stats(self):
        send(self.r, 1)
        self.settle_delivery()
        stats = self.ok("stats")
        text = self.scrape()
        fams = {f.name: f for f in text_string_to_metric_families(text)}
        for k, v in stats["total"].items():
            name = "vmrelay_" + k
            self.assertIn(name, fams)
            fam = fams[name]
            self.assertEqual(fam.type, "gauge" if k == "sessions_active" else "counter", k)
            per = {s.labels["worker"]: s.value for s in fam.samples}
            self.assertEqual(sorted(per), ["0", "1"], k)
            if k != "sessions_active" and k != "connections":
                # nothing ran between the two commands
                self.assertEqual(sum(per.values()), v, k)
        self.assertEqual(fams["vmrelay_spool_committed"].samples[0].value,
                         stats["spool"]["committed"])
        # the control socket's metrics are the same text
        self.assertEqual(self.ok("metrics")["metrics"], text)
        self.assertEqual(self.r.ctl("metrics", human=True).stdout, text)

    def test_metrics_http_refusals(self):
        host, port = self.metrics_url[7:].split("/")[0].split(":")
        for method, path, status in (("GET", "/", 404), ("POST", "/metrics", 405),
                                     ("HEAD", "/metrics", 200)):
            c = http.client.HTTPConnection(host, int(port), timeout=10)
            c.request(method, path)
            resp = c.getresponse()
            self.assertEqual(resp.status, status, (method, path))
            body = resp.read()
            self.assertEqual(body == b"", method == "HEAD")
            c.close()
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n")
            self.assertTrue(s.recv(100).startswith(b"HTTP/1.1 400 Bad Request\r\n"))
        self.scrape()       # still serving


class DrainTest(unittest.TestCase):

    def test_drain_finishes_the_session_and_exits_0(self):
        r = Relay(workers=1).start()
        try:
            with r.connect() as c:
                c.hello("vps1.example.com")
                c.expect(250, "MAIL FROM:<user@example.com>\r\n")
                c.expect(250, "RCPT TO:<a@example.net>\r\n")
                p = r.ctl("drain")
                self.assertEqual((p.returncode, json.loads(p.stdout)), (0, {"ok": True}))
                time.sleep(0.2)
                # no new sessions ...
                with self.assertRaises(OSError):
                    with r.connect() as late:
                        late.hello()
                # ... while the one in flight ends its message
                c.expect(354, "DATA\r\n")
                c.send(message("drained") + b".\r\n")
                self.assertEqual(relay.queued_qid(c.expect(250)) is not None, True)
                c.expect(221, "QUIT\r\n")
            self.assertEqual(r.proc.wait(15), 0)
            self.assertIn("event=drained", r.log())
            self.assertFalse(os.path.exists(r.ctl_path))
        finally:
            r.cleanup()


if __name__ == "__main__":
    unittest.main()


class QueueListCapTest(Ctl):
    """queue list on a queue longer than a reply holds (100 messages by
    default, --limit up to 10000): the first ones, how many match and
    "truncated", so a million queued messages are not a 200 MB reply; a
    filter that narrows the list below the limit gets it whole. vps show
    counts every message all the same. Both come from the delivery threads'
    memory, not the spool: with the spool's segments gone (as by a disk
    failure) they still see the mail the threads hold."""

    N = 150

    @classmethod
    def setUpClass(cls):
        cls.r = Relay(workers=2).start()
        with smtplib.SMTP("127.0.0.1", cls.r.port, timeout=30) as s:
            s.ehlo("vps1.example.com")
            for i in range(cls.N):
                s.sendmail("user@example.com", ["r%d@example.net" % i],
                           message("cap %d" % i, to="r%d@example.net" % i))
            s.sendmail("user@example.com", ["one@narrow.example"],
                       message("narrow", to="one@narrow.example"))

    @classmethod
    def tearDownClass(cls):
        cls.r.stop()
        cls.r.cleanup()

    def test_list_capped_depth_whole(self):
        total = self.N + 1
        first = self.ok("queue", "list")
        self.assertEqual(len({m["qid"] for m in first["messages"]}), 100)
        self.assertEqual((first["total"], first["truncated"]), (total, True))
        some = self.ok("queue", "list", "--vps", "vps1", "--limit", "7")
        self.assertEqual((len(some["messages"]), some["total"], some["truncated"]),
                         (7, total, True))
        every = self.ok("queue", "list", "--limit", str(total))
        self.assertEqual((len({m["qid"] for m in every["messages"]}), every["truncated"]),
                         (total, False))
        narrow = self.ok("queue", "list", "--domain", "narrow.example")
        self.assertEqual((len(narrow["messages"]), narrow["total"], narrow["truncated"]),
                         (1, 1, False))
        self.assertEqual(narrow["messages"][0]["pending"], 1)
        self.assertEqual(self.ok("vps", "show", "vps1")["queue"]["messages"], total)
        self.assertIn("limit '0' is not a number from 1 to 10000",
                      self.refused("queue", "list", "--limit", "0"))
        human = self.r.ctl("queue", "list", human=True).stdout
        self.assertRegex(human, r"(?m)^100 of %d messages shown: narrow with --vps or "
                                r"--domain, or --limit$" % total)
        # from memory: the spool's segments gone, the threads still hold it all
        gone = 0
        for top, _, names in os.walk(self.r.spool_dir):
            for name in names:
                if name.endswith(".seg"):
                    os.unlink(os.path.join(top, name))
                    gone += 1
        self.assertGreater(gone, 0)
        self.assertEqual(self.ok("queue", "list", "--vps", "vps1")["total"], total)
        self.assertEqual(self.ok("vps", "show", "vps1")["queue"]["messages"], total)


class DepthTest(Ctl):
    """vps show's queue depth follows the queue as it changes: a recipient
    delivered no longer counts, one deferred still does, a held message
    counts as held, a deleted one not at all (the delivery threads keep
    these counts; vps show reads them without asking)."""

    def setUp(self):
        self.rx = Receiver(refuse=lambda rcpt, n: "451 4.3.0 later"
                           if rcpt.startswith("later") else None).start()
        self.r = Relay(workers=2, tls=False,
                       delivery={"smarthost": "127.0.0.1:%d" % self.rx.port}).start()

    def tearDown(self):
        self.r.stop()
        self.r.cleanup()
        self.rx.stop()

    def depth(self):
        q = self.ok("vps", "show", "vps1")["queue"]
        return q["messages"], q["recipients"], q["held"]

    def test_depth_follows_the_queue(self):
        rcpts = ["now1@example.net", "later@example.net", "now2@example.net"]
        with smtplib.SMTP("127.0.0.1", self.r.port, timeout=10) as s:
            s.sendmail("user@example.com", rcpts, message("depth", to=rcpts[0]))
        self.assertEqual(len(self.rx.wait(1)), 1)
        deadline = time.monotonic() + 10
        while self.depth() != (1, 1, 0) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.depth(), (1, 1, 0))
        qid = self.ok("queue", "list")["messages"][0]["qid"]
        self.ok("queue", "hold", qid)
        self.assertEqual(self.depth(), (1, 1, 1))
        self.ok("queue", "release", qid)
        self.assertEqual(self.depth(), (1, 1, 0))
        self.ok("queue", "delete", qid)
        self.assertEqual(self.depth(), (0, 0, 0))
