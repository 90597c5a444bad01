"""Durability: kill -9 the relay at random moments while several clients
send, restart it on the same spool, many times over. Every message that got
"250 ... queued as QID" must then be in the spool, intact (same SHA-256 of
the body), and no queue ID may repeat.

Seeded (VR_E2E_SEED, printed) so a failing schedule can be replayed; bounded
by CYCLES kills and a wall-clock cap.
"""

import hashlib
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor
import time
import unittest

from relay import Relay, message, queued_qid

CYCLES = 20
CLIENTS = 4
MAX_SECONDS = 90


class Sender(threading.Thread):
    """Sends messages over and over, reconnecting whenever the relay dies;
    records (qid, sha256) for every 250."""

    def __init__(self, relay, n, seed):
        super().__init__(daemon=True)
        self.relay, self.n = relay, n
        self.rng = random.Random(seed)
        self.acked = {}
        self.stop = threading.Event()
        self.errors = 0

    def session(self):
        with self.relay.connect(timeout=5) as c:
            c.hello("vps1.example.com")
            for i in range(self.rng.randint(1, 8)):
                if self.stop.is_set():
                    return
                size = self.rng.choice((100, 100, 2000, 2000, 20000, 200000))
                body = b"".join(b"%s %d %d %d\r\n" % (
                    self.rng.randbytes(20).hex().encode(), self.n, i, k)
                    for k in range(size // 60 + 1))
                msg = message("crash test %d" % self.n, body)
                c.send(b"MAIL FROM:<user@example.com>\r\nRCPT TO:<rcpt@example.net>\r\n"
                       b"DATA\r\n")
                c.expect(250)
                c.expect(250)
                c.expect(354)
                c.send(msg + b".\r\n")
                code, text = c.reply()
                if code == 250:
                    qid = queued_qid(text)
                    assert qid and qid not in self.acked, "bad or repeated queue ID " + text
                    self.acked[qid] = hashlib.sha256(msg).hexdigest()
                # Keeps the volume (and the check afterwards) moderate.
                time.sleep(self.rng.uniform(0, 0.03))
            c.send("QUIT\r\n")

    def run(self):
        while not self.stop.is_set():
            try:
                self.session()
            except (OSError, EOFError, AssertionError, ValueError):
                # The relay died under us (or is restarting): try again.
                self.errors += 1
                time.sleep(0.02)


class CrashTest(unittest.TestCase):

    def test_kill9_keeps_every_acknowledged_message(self):
        seed = int(os.environ.get("VR_E2E_SEED", "20261204"))
        print("\n      crash test seed %d (VR_E2E_SEED)" % seed, flush=True)
        rng = random.Random(seed)
        relay = Relay(workers=2)
        try:
            relay.start()
            senders = [Sender(relay, n, rng.random()) for n in range(CLIENTS)]
            for s in senders:
                s.start()
            t0 = time.monotonic()
            kills = 0
            while kills < CYCLES and time.monotonic() - t0 < MAX_SECONDS:
                time.sleep(rng.uniform(0.05, 0.5))
                relay.kill()
                kills += 1
                relay.start()
            time.sleep(0.5)
            for s in senders:
                s.stop.set()
            for s in senders:
                s.join(30)
            self.assertEqual(relay.stop(), 0)

            acked = {}
            for s in senders:
                for qid in s.acked:
                    self.assertNotIn(qid, acked, "queue ID %s given twice" % qid)
                acked.update(s.acked)
            print("      %d kills, %d messages acknowledged" % (kills, len(acked)), flush=True)
            self.assertGreaterEqual(kills, CYCLES)
            self.assertGreater(len(acked), CYCLES, "too few messages to mean anything")

            queue = relay.queue()
            missing = sorted(set(acked) - set(queue))
            self.assertEqual(missing, [], "acknowledged but not in the spool")
            with ThreadPoolExecutor(4) as pool:
                digests = dict(zip(acked, pool.map(
                    lambda q: hashlib.sha256(relay.body_of(q)).hexdigest(), acked)))
            changed = sorted(q for q in acked if digests[q] != acked[q])
            self.assertEqual(changed, [], "acknowledged messages changed")
            # Torn tails are expected after kill -9; damage elsewhere is not.
            check = relay.spool("check", check=False)
            self.assertEqual(check.returncode, 0, check.stdout.decode() + check.stderr.decode())
            self.assertIsNotNone(relay.wait_log(r"event=spool_recovered .*messages=[1-9]"))
        finally:
            relay.cleanup()


if __name__ == "__main__":
    unittest.main()
