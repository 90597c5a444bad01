"""vmrelay-bench against real SMTP servers and clients, on loopback.

What vmrelay-bench reports must be what the other side saw: the messages
it counts as accepted are exactly those the receiver holds, byte for byte
(the sum of their SHA-256 or XXH3 digests, computed here independently,
matches its own), and every refusal is counted under its reply code.

- against Postfix's smtp-sink, which dumps every message to a file;
- against aiosmtpd with a handler that records each message and refuses
  some recipients (451, 550) and some messages (451 after DATA);
- --sink receiving from smtp-source and swaks, and from vmrelay-bench itself
  with failures injected, over DATA, BDAT and STARTTLS;
- against vmrelay, whose spool must hold exactly the accepted messages;
- bench/e2e/dkimcheck.py (bench/e2e.sh's check of the far sink's mail) on a
  real smtp-sink dump: all signed passes, a missing, unsigned or tampered
  message fails.
"""

import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import xxhash
from aiosmtpd.controller import Controller

import relay
from relay import Relay

BENCH = os.path.join(relay.BUILD, "bench", "vmrelay-bench", "vmrelay-bench")


def sha256_sum(messages):
    """vmrelay-bench's order-free figure: the digests added mod 2^256."""
    total = sum(int.from_bytes(hashlib.sha256(m).digest(), "big") for m in messages)
    return "%064x" % (total % 2 ** 256)


def xxh3_sum(messages):
    return "%016x" % (sum(xxhash.xxh3_64_intdigest(m) for m in messages) % 2 ** 64)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench(*args, timeout=120):
    """Runs vmrelay-bench with --json; returns (exit status, report, stderr)."""
    p = subprocess.run([BENCH, "--json"] + [str(a) for a in args], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode()
    try:
        report = json.loads(out)
    except ValueError:
        raise AssertionError("no JSON report (exit %d): %r\n%s"
                             % (p.returncode, out, p.stderr.decode()))
    return p.returncode, report, p.stderr.decode()


class Sink:
    """vmrelay-bench --sink on a free port; report() asks for its counts."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([BENCH, "--sink", "--listen", "127.0.0.1:0", "--json"]
                                     + [str(a) for a in args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        line = self.proc.stderr.readline().decode()
        m = re.match(r"vmrelay-bench: sink listening on 127\.0\.0\.1:(\d+)$", line.strip())
        if not m:
            self.proc.kill()
            raise AssertionError("sink did not start: %r %r" % (line, self.proc.stderr.read()))
        self.port = int(m.group(1))

    def report(self):
        """The counts so far (SIGUSR1: one JSON line)."""
        self.proc.send_signal(signal.SIGUSR1)
        return json.loads(self.proc.stdout.readline())

    def stop(self):
        """SIGTERM: the final counts, and the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, json.loads(out.decode().splitlines()[-1]), err.decode()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


class BenchAgainstSmtpSinkTest(unittest.TestCase):
    """Postfix's smtp-sink dumps each message it accepts (-d): those files
    must be exactly the messages vmrelay-bench counted."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="vr-e2e-bench-")
        os.chmod(self.dir, 0o777)         # smtp-sink writes as nobody
        self.port = free_port()
        self.sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", "-d", os.path.join(self.dir, "%H%M%S."),
             "127.0.0.1:%d" % self.port, "64"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("smtp-sink did not listen")
                time.sleep(0.05)
        # that probe was a session of its own: it leaves no message behind

    def tearDown(self):
        self.sink.kill()
        self.sink.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def dumped(self, clients=None):
        """The messages as the client sent them (after dot-unstuffing): the
        dump's lines after smtp-sink's own headers (ending with its
        three-line Received), without the empty line it appends, in CRLF.
        clients, a set, gets the client addresses smtp-sink saw."""
        messages = []
        for path in glob.glob(os.path.join(self.dir, "*")):
            with open(path, "rb") as f:
                lines = f.read().split(b"\n")
            i = next(n for n, l in enumerate(lines) if l.startswith(b"Received: ")) + 3
            assert lines[-2:] == [b"", b""], path
            messages.append(b"".join(l + b"\r\n" for l in lines[i:-2]))
            if clients is not None:
                clients.add(lines[0].decode())
        return messages

    def test_counts_and_hashes_match(self):
        rc, r, err = bench("--target", "127.0.0.1:%d" % self.port, "--sessions", 4,
                           "--messages", 60, "--size", "300..40k:lognormal", "--reuse",
                           "--pipelining", "--rcpts", 2, "--hash", "sha256")
        self.assertEqual(rc, 0, err)
        self.assertEqual(r["messages"], {"sent": 60, "accepted": 60, "failed": 0})
        self.assertEqual(r["recipients"], {"accepted": 120, "refused": 0})
        got = self.dumped()
        self.assertEqual(len(got), 60)
        self.assertEqual(r["hash"], {"alg": "sha256", "sum": sha256_sum(got), "messages": 60})
        self.assertEqual(r["bytes"], sum(len(m) for m in got))
        # the messages carry dot-stuffed lines: smtp-sink unstuffed them
        self.assertTrue(all(b"\r\n." in m for m in got))
        self.assertEqual(r["sessions_completed"], 4)
        self.assertGreater(r["latency_ms"]["p99"], 0)

    def test_new_connection_per_message(self):
        """Each message on a connection of its own, from two source
        addresses in turn."""
        rc, r, err = bench("--target", "127.0.0.1:%d" % self.port, "--sessions", 3,
                           "--messages", 10, "--size", 2000, "--hash", "xxh3",
                           "--source", "127.0.0.2,127.0.0.3")
        self.assertEqual(rc, 0, err)
        self.assertEqual(r["connections"], 10)
        self.assertEqual(r["sessions_completed"], 10)
        clients = set()
        got = self.dumped(clients)
        self.assertEqual([len(m) for m in got], [2000] * 10)
        self.assertEqual(r["hash"]["sum"], xxh3_sum(got))
        self.assertEqual(clients, {"X-Client-Addr: 127.0.0.2", "X-Client-Addr: 127.0.0.3"})

    def test_missing_extension_fails_clearly(self):
        """smtp-sink offers no CHUNKING: every message fails, saying so."""
        rc, r, err = bench("--target", "127.0.0.1:%d" % self.port, "--messages", 3,
                           "--chunking")
        self.assertEqual(rc, 1)
        self.assertEqual(r["failures"], {"EHLO: no CHUNKING offered": 3})
        self.assertIn("3 of 3 messages failed", err)
        self.assertEqual(self.dumped(), [])


class Recorder:
    """aiosmtpd handler: refuses recipients tagged +2 (451) and +4 (550),
    and with 451 every message whose number (in its Subject) is a multiple
    of 5; records the content of the others."""

    def __init__(self):
        self.accepted = []
        self.refused_rcpts = {451: 0, 550: 0}
        self.refused_msgs = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "+2@" in address:
            self.refused_rcpts[451] += 1
            return "451 4.2.0 try this one later"
        if "+4@" in address:
            self.refused_rcpts[550] += 1
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        n = int(re.search(rb"Subject: vmrelay-bench message (\d+)", envelope.original_content)
                .group(1))
        if n % 5 == 0:
            self.refused_msgs += 1
            return "451 4.3.0 not now"
        self.accepted.append(envelope.original_content)
        return "250 2.0.0 OK"


class BenchAgainstAiosmtpdTest(unittest.TestCase):

    def setUp(self):
        self.rec = Recorder()
        self.port = free_port()
        self.ctl = Controller(self.rec, hostname="127.0.0.1", port=self.port)
        self.ctl.start()

    def tearDown(self):
        self.ctl.stop()

    def test_refusals_counted_by_code(self):
        rc, r, err = bench("--target", "127.0.0.1:%d" % self.port, "--sessions", 5,
                           "--messages", 40, "--rcpts", 5, "--to", "rcpt@example.net",
                           "--size", "1k..20k", "--reuse", "--hash", "sha256")
        # recipients 1..5 of each message: +2 and +4 refused, 3 accepted
        self.assertEqual(rc, 1)
        self.assertEqual(self.rec.refused_rcpts, {451: 40, 550: 40})
        self.assertEqual(r["refused"], {"RCPT 451": 40, "RCPT 550": 40})
        self.assertEqual(self.rec.refused_msgs, 8)
        self.assertEqual(r["failures"], {"end-of-data 451": 8})
        self.assertEqual(r["messages"], {"sent": 40, "accepted": 32, "failed": 8})
        self.assertEqual(r["recipients"], {"accepted": 96, "refused": 80})
        self.assertEqual(len(self.rec.accepted), 32)
        self.assertEqual(r["hash"]["sum"], sha256_sum(self.rec.accepted))
        self.assertIn("8 of 40 messages failed, 80 recipients refused", err)

    def test_all_recipients_refused_fails_the_message(self):
        rc, r, err = bench("--target", "127.0.0.1:%d" % self.port, "--messages", 4,
                           "--to", "x+4@example.net", "--reuse")
        self.assertEqual(rc, 1)
        self.assertEqual(r["failures"], {"RCPT 550": 4})
        self.assertEqual(r["messages"]["accepted"], 0)
        self.assertEqual(self.rec.accepted, [])


class SinkTest(unittest.TestCase):

    def setUp(self):
        self.sinks = []

    def tearDown(self):
        for s in self.sinks:
            s.kill()

    def sink(self, *args):
        s = Sink(*args)
        self.sinks.append(s)
        return s

    def test_smtp_source(self):
        s = self.sink("--hash", "sha256")
        p = subprocess.run(["smtp-source", "-d", "-s", "4", "-m", "50", "-l", "3000",
                            "-f", "a@example.com", "-t", "b@example.net",
                            "127.0.0.1:%d" % s.port], stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        r = s.report()
        self.assertEqual((r["messages"], r["recipients"], r["errors"]), (50, 50, 0))
        self.assertGreaterEqual(r["bytes"], 50 * 3000)
        self.assertEqual(r["hash"]["messages"], 50)
        rc, final, _ = s.stop()
        self.assertEqual(rc, 0)
        self.assertEqual(final["messages"], 50)

    def test_swaks_exact_bytes(self):
        """swaks sends files as they are: the sink's sum must be theirs."""
        s = self.sink("--hash", "xxh3")
        bodies = [
            b"From: <a@example.com>\r\nTo: <b@example.net>\r\nSubject: one\r\n\r\nHello.\r\n",
            b"Subject: two\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nafter a lone dot\r\n",
            b"Subject: three\r\n\r\n" + b"x" * 998 + b"\r\n",
        ]
        with tempfile.TemporaryDirectory() as d:
            for i, body in enumerate(bodies):
                path = os.path.join(d, "m%d" % i)
                # swaks ends the data with a CRLF of its own
                with open(path, "wb") as f:
                    f.write(body[:-2])
                p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(s.port),
                                    "--from", "a@example.com", "--to", "b@example.net",
                                    "--data", "@" + path],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
                self.assertEqual(p.returncode, 0, p.stdout.decode())
        r = s.report()
        self.assertEqual(r["messages"], 3)
        self.assertEqual(r["bytes"], sum(len(b) for b in bodies))
        self.assertEqual(r["hash"]["sum"], xxh3_sum(bodies))

    def check_against_sink(self, sink_args, bench_args, final):
        s = self.sink("--hash", "sha256", "--fail-rate", "0.3", "--reply-code", "451",
                      *sink_args)
        rc, r, err = bench("--target", "127.0.0.1:%d" % s.port, "--sessions", 6,
                           "--messages", 120, "--size", "256..30k", "--hash", "sha256",
                           *bench_args)
        got = s.report()
        self.assertEqual(rc, 1, err)
        self.assertGreater(got["refused"], 10)      # 30% of 120, give or take
        self.assertEqual(r["failures"], {final + " 451": got["refused"]})
        self.assertEqual(r["messages"]["accepted"], got["messages"])
        self.assertEqual(r["messages"]["accepted"] + got["refused"], 120)
        self.assertEqual(r["bytes"], got["bytes"])
        self.assertEqual(r["hash"]["sum"], got["hash"]["sum"])
        self.assertEqual(got["errors"], 0)

    def test_injected_failures_data_pipelined(self):
        self.check_against_sink([], ["--reuse", "--pipelining"], "end-of-data")

    def test_injected_failures_bdat(self):
        self.check_against_sink([], ["--reuse", "--chunking", "--pipelining", "--rcpts", 3],
                                "BDAT")

    def test_injected_failures_starttls(self):
        cert, key = relay.test_cert()
        self.check_against_sink(["--tls-cert", cert, "--tls-key", key],
                                ["--starttls", "--chunking"], "BDAT")

    def test_sink_ends_after_messages(self):
        s = self.sink("--messages", 7)
        rc, r, err = bench("--target", "127.0.0.1:%d" % s.port, "--messages", 7, "--reuse")
        self.assertEqual(rc, 0, err)
        self.assertEqual(s.proc.wait(timeout=10), 0)
        self.assertEqual(json.loads(s.proc.stdout.read().decode())["messages"], 7)

    def test_bad_options_say_why(self):
        for args, why in [
            (["--target", "127.0.0.1:25", "--sessions", "0"], "--sessions: '0' is not"),
            (["--target", "127.0.0.1:25", "--size", "1k..1m:normal"], "uniform or lognormal"),
            (["--target", "nohost"], "--target: 'nohost' is not HOST:PORT"),
            (["--target", "127.0.0.1:25", "--hash", "md5"], "sha256 or xxh3"),
            (["--target", "127.0.0.1:25", "--fail-rate", "0.1"], "options of --sink only"),
            (["--target", "127.0.0.1:25", "--source", "::1"], "target's family"),
            (["--sink", "--listen", "127.0.0.1:0", "--reuse"], "load generator's own"),
            (["--target", "127.0.0.1:25", "--bogus"], "--bogus: unknown option"),
            (["--target"], "--target: needs a value"),
        ]:
            p = subprocess.run([BENCH] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               timeout=10)
            self.assertEqual(p.returncode, 2, args)
            self.assertIn(why, p.stderr.decode(), args)


class BenchAgainstVmrelayTest(unittest.TestCase):
    """vmrelay's spool must hold exactly what vmrelay-bench counted."""

    @classmethod
    def setUpClass(cls):
        cls.relay = Relay().start()

    @classmethod
    def tearDownClass(cls):
        status = cls.relay.stop()
        cls.relay.cleanup()
        assert status == 0, "vmrelay exited with %r on SIGTERM" % status

    def run_into_relay(self, *args):
        before = set(self.relay.queue())
        rc, r, err = bench("--target", "127.0.0.1:%d" % self.relay.port, "--from",
                           "user@example.com", "--to", "rcpt@example.net", "--helo",
                           "vps1.example.com", "--hash", "sha256", *args)
        queue = self.relay.queue()
        new = {q: rec for q, rec in queue.items() if q not in before}
        # every message counted as accepted is in the spool, none else is
        self.assertEqual(len(new), r["messages"]["accepted"], (r, err))
        self.assertEqual(r["messages"]["accepted"] + r["messages"]["failed"],
                         r["messages"]["sent"])
        self.assertEqual(rc == 0, r["messages"]["failed"] == 0 and
                         r["recipients"]["refused"] == 0, err)
        stored = [self.relay.body_of(q) for q in new]
        self.assertEqual(r["hash"]["sum"], sha256_sum(stored))
        self.assertTrue(all(rec["sender"] == "user@example.com" for rec in new.values()))
        return r, new

    def test_pipelined_reused(self):
        r, new = self.run_into_relay("--sessions", 6, "--messages", 50, "--size",
                                     "1k..64k:lognormal", "--reuse", "--pipelining")
        self.assertGreater(r["messages"]["accepted"], 0)

    def test_starttls_bdat(self):
        r, new = self.run_into_relay("--sessions", 2, "--messages", 6, "--starttls",
                                     "--chunking", "--rcpts", 2)
        self.assertTrue(all("tls" in rec["flags"] for rec in new.values()))
        self.assertTrue(all(len(rec["recipients"]) == 2 for rec in new.values()))


class DkimCheckTest(unittest.TestCase):
    """bench/e2e/dkimcheck.py, which passes bench/e2e.sh's runs, on a real
    smtp-sink -D dump: it passes only if every message arrived, signed by
    the key, and the sample verifies."""

    DKIMCHECK = os.path.join(relay.ROOT, "bench", "e2e", "dkimcheck.py")

    def setUp(self):
        import base64
        import dkim
        import nacl.signing
        self.dkim = dkim
        self.dir = tempfile.mkdtemp(prefix="vr-e2e-dkimcheck-")
        os.chmod(self.dir, 0o777)         # smtp-sink writes as nobody
        seed = nacl.signing.SigningKey.generate()
        self.priv = base64.b64encode(bytes(seed))
        self.pub = base64.b64encode(bytes(seed.verify_key)).decode()
        self.port = free_port()
        self.sink = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", "-D", os.path.join(self.dir, "mail"),
             "127.0.0.1:%d" % self.port, "64"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while subprocess.run(["ss", "-Hltn", "sport = :%d" % self.port],
                             stdout=subprocess.PIPE).stdout.strip() == b"":
            self.assertLess(time.monotonic(), deadline, "smtp-sink did not listen")
            time.sleep(0.05)

    def tearDown(self):
        self.sink.kill()
        self.sink.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def send(self, n, sign=True, tamper=False):
        import smtplib
        with smtplib.SMTP("127.0.0.1", self.port) as c:
            for i in range(n):
                msg = (b"From: bench@bench.example\r\nTo: sink@sink.example\r\n"
                       b"Subject: %d\r\n\r\nline one\r\n  spaced  line %d\r\n" % (i, i))
                if sign:
                    msg = self.dkim.sign(msg, b"ed1", b"bench.example", self.priv,
                                         signature_algorithm=b"ed25519-sha256") + msg
                if tamper:
                    msg = msg.replace(b"line one", b"line One")
                c.sendmail("bench@bench.example", ["sink@sink.example"], msg)

    def check(self, expect):
        p = subprocess.run(["/usr/bin/python3", self.DKIMCHECK, self.dir, "--expect", str(expect),
                            "--pubkey", self.pub, "--domain", "bench.example", "--selector", "ed1",
                            "--sample", "3"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_all_signed_passes(self):
        self.send(5)
        self.assertEqual(self.check(5), (0, "messages=5 signed=5 verified=3/3\n", ""))

    def test_missing_or_unsigned_fails(self):
        self.send(4)
        self.send(1, sign=False)
        rc, out, err = self.check(5)
        self.assertEqual((rc, out), (1, "messages=5 signed=4 verified=3/3\n"))
        self.assertIn("5 messages, 4 signed", err)
        rc, out, err = self.check(6)
        self.assertEqual(rc, 1)
        self.assertIn("expected 6", err)

    def test_bad_signature_fails(self):
        self.send(3, tamper=True)
        rc, out, err = self.check(3)
        self.assertEqual((rc, out), (1, "messages=3 signed=3 verified=0/3\n"))
        self.assertIn("fails DKIM verification", err)


if __name__ == "__main__":
    unittest.main()
