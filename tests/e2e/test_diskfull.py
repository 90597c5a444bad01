"""A full spool disk: the client gets 452 4.3.1, never a 250 for a message
that is not on disk, and once space is back the same relay process accepts
mail again. The spool lives on a small tmpfs (needs root and mount rights;
skipped with the reason otherwise).
"""

import errno
import os
import subprocess
import unittest

from relay import Relay, message, queued_qid

TMPFS_SIZE = "4m"


def send(relay, msg):
    """(code, text) of the final reply to one message."""
    with relay.connect() as c:
        c.hello("vps1.example.com")
        c.expect(250, "MAIL FROM:<user@example.com>\r\n")
        c.expect(250, "RCPT TO:<rcpt@example.net>\r\n")
        c.expect(354, "DATA\r\n")
        c.send(msg + b".\r\n")
        return c.reply()


def fill(path):
    """Writes path until the file system is full; returns bytes written."""
    chunk = b"\xa5" * 65536
    n = 0
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                n += f.write(chunk)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
    return n


class DiskFullTest(unittest.TestCase):

    def setUp(self):
        self.relay = Relay(workers=1)
        os.makedirs(self.relay.spool_dir)
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "tmpfs",
                            self.relay.spool_dir], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        if p.returncode != 0:
            self.relay.cleanup()
            self.skipTest("cannot mount a tmpfs for the spool (%s): needs root and "
                          "CAP_SYS_ADMIN" % p.stdout.decode().strip())

    def tearDown(self):
        self.relay.stop()
        subprocess.run(["umount", self.relay.spool_dir])
        self.relay.cleanup()

    def test_452_when_full_and_recovers(self):
        r = self.relay.start()
        body = b"".join(b"line %05d of a message that will not fit anywhere\r\n" % i
                        for i in range(4000))
        first = message("before full", body)
        code, text = send(r, first)
        self.assertEqual(code, 250, text)
        kept = queued_qid(text)

        filler = os.path.join(r.spool_dir, "filler")
        self.assertGreater(fill(filler), 0)
        for i in range(3):
            code, text = send(r, message("while full %d" % i, body))
            self.assertEqual(code, 452, text)
            self.assertIn("4.3.1", text)
        self.assertIsNotNone(r.wait_log(r"reason=spool_full"))

        os.unlink(filler)
        after = message("after space returned", body)
        code, text = send(r, after)
        self.assertEqual(code, 250, text)
        back = queued_qid(text)

        self.assertEqual(r.stop(), 0)
        queue = r.queue()
        self.assertEqual(sorted(queue), sorted([kept, back]))
        self.assertEqual(r.body_of(kept), first)
        self.assertEqual(r.body_of(back), after)


if __name__ == "__main__":
    unittest.main()
