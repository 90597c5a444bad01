#!/usr/bin/python3
"""vmrelay-spool against spools written here, in Python, from the format
described at the top of engine/spool/record.c: an independent writer, so
the tool and the documented format are checked together.

The binary is $VMRELAY_BUILD/engine/spool/vmrelay-spool (VMRELAY_BUILD
defaults to build/ at the top of the repository).
"""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("VMRELAY_BUILD", os.path.join(ROOT, "build"))
TOOL = os.path.join(BUILD, "engine", "spool", "vmrelay-spool")

# --- the format (record.c) ---

def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table

CRC_TABLE = _crc_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


REC_MAGIC = b"\xf5\x76\x72\x1e"
ENVELOPE, BODY, END = 1, 2, 3
FLAGS = {"8bitmime": 1, "smtputf8": 2, "tls": 4, "auth": 8, "hold": 16}


class Segment:
    """Writes one segment file the way the committer does."""

    def __init__(self, spool, worker, seq, salt=0x5EED1234):
        self.salt = salt
        self.path = os.path.join(spool, "seg", "w%d-%010d.seg" % (worker, seq))
        hdr = b"vmrspool" + struct.pack("<IIQQI", 1, worker, seq, 1700000000000000, salt)
        self.data = bytearray(hdr + struct.pack("<I", crc32c(hdr)))

    def record(self, rtype, payload):
        head = REC_MAGIC + bytes([rtype, 0, 0, 0]) + struct.pack("<I", len(payload))
        crc = crc32c(payload, crc32c(head, self.salt))
        self.data += head + struct.pack("<I", crc) + payload

    def message(self, m, chunk=1000):
        """Appends message m (a dict as --json prints it, plus body);
        returns its offset."""
        def field(tag, value):
            return bytes([tag]) + struct.pack("<H", len(value)) + value

        flags = sum(FLAGS[f] for f in m["flags"])
        env = (field(1, m["qid"].encode()) + field(2, struct.pack("<Q", m["received_us"])) +
               field(3, struct.pack("<I", flags)) + field(4, m["account"]) +
               field(5, m["client"]) + field(6, m["helo"]) + field(7, m["sender"]) +
               b"".join(field(8, r) for r in m["recipients"]))
        offset = len(self.data)
        self.record(ENVELOPE, env)
        body = m["body"]
        pieces = [body[i:i + chunk] for i in range(0, len(body), chunk)]
        for p in pieces:
            self.record(BODY, p)
        self.record(END, struct.pack("<QI", len(body), len(pieces)))
        return offset

    def save(self, length=None):
        with open(self.path, "wb") as f:
            f.write(self.data[:length])


def msg(qid, body, account=b"vps1", sender=b"root@host1.example.com",
        recipients=(b"a@example.org", b"b@example.net"), flags=("8bitmime", "tls"),
        received_us=1714564800123456):
    return {"qid": qid, "body": body, "account": account, "client": b"203.0.113.7",
            "helo": b"host1.example.com", "sender": sender, "recipients": list(recipients),
            "flags": list(flags), "received_us": received_us}


BINARY = bytes(range(256)) * 9                          # every byte value, 2304 bytes
TEXT = b"Received: from host1\r\nSubject: hi\r\n\r\n.leading dot\r\nbye\r\n"


class SpoolToolTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not os.access(TOOL, os.X_OK):
            raise RuntimeError("%s not built (set VMRELAY_BUILD to the build directory)" % TOOL)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="vr_spool_tool.")
        self.spool = os.path.join(self.tmp, "spool")
        os.makedirs(os.path.join(self.spool, "seg"))

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def run_tool(self, *args):
        return subprocess.run([TOOL] + list(args), capture_output=True, timeout=30)

    def standard_spool(self):
        """Three messages over two segments, as two workers write them."""
        a = Segment(self.spool, 0, 1)
        b = Segment(self.spool, 1, 2, salt=0xA5A5A5A5)
        self.msgs = [
            msg("1K1T47KQQEW00", TEXT),
            msg("1K1T47KQQF501", b"", account=b"vps2", sender=b"", recipients=[b"x@example.com"],
                flags=[], received_us=42),
            msg("1K1T47KQS7W00", BINARY, flags=["smtputf8", "auth", "hold"]),
        ]
        self.msgs[0]["offset"] = a.message(self.msgs[0])
        self.msgs[1]["offset"] = b.message(self.msgs[1])
        self.msgs[2]["offset"] = a.message(self.msgs[2], chunk=700)
        self.msgs[0]["segment"] = self.msgs[2]["segment"] = "seg/w0-0000000001.seg"
        self.msgs[1]["segment"] = "seg/w1-0000000002.seg"
        a.save()
        b.save()
        return a, b

    # --- list ---

    def test_list_table(self):
        self.standard_spool()
        r = self.run_tool(self.spool)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, b"")
        lines = r.stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["QUEUE", "ID", "SIZE", "ARRIVAL", "ACCOUNT", "SENDER",
                                            "->", "RECIPIENTS"])
        self.assertEqual(lines[1].split(), ["1K1T47KQQEW00", str(len(TEXT)), "2024-05-01T12:00:00Z",
                                            "vps1", "root@host1.example.com", "->",
                                            "a@example.org,", "b@example.net"])
        # held: "!" after the queue ID, as in Postfix's mailq
        self.assertEqual(lines[2].split()[:2], ["1K1T47KQS7W00!", str(len(BINARY))])
        self.assertEqual(lines[3].split(), ["1K1T47KQQF501", "0", "1970-01-01T00:00:00Z", "vps2",
                                            "<>", "->", "x@example.com"])
        self.assertEqual(lines[4], "-- 3 messages, %d bytes, 1 held (!)"
                         % (len(TEXT) + len(BINARY)))
        self.assertEqual(len(lines), 5)

    def test_list_json(self):
        self.standard_spool()
        r = self.run_tool("--json", self.spool)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = [json.loads(line) for line in r.stdout.decode().splitlines()]
        want = [self.msgs[0], self.msgs[2], self.msgs[1]]   # segment order, then file order
        self.assertEqual(len(got), 3)
        for g, m in zip(got, want):
            self.assertEqual(g["qid"], m["qid"])
            self.assertEqual(g["size"], len(m["body"]))
            self.assertEqual(g["received_us"], m["received_us"])
            self.assertEqual(g["account"], m["account"].decode())
            self.assertEqual(g["client"], m["client"].decode())
            self.assertEqual(g["helo"], m["helo"].decode())
            self.assertEqual(g["sender"], m["sender"].decode())
            self.assertEqual(g["recipients"], [x.decode() for x in m["recipients"]])
            self.assertEqual(sorted(g["flags"]), sorted(m["flags"]))
            self.assertEqual(g["segment"], m["segment"])
            self.assertEqual(g["offset"], m["offset"])
        self.assertEqual(got[0]["arrival"], "2024-05-01T12:00:00.123456Z")

    def test_list_empty(self):
        r = self.run_tool(self.spool)
        self.assertEqual((r.returncode, r.stdout), (0, b"spool is empty\n"))
        r = self.run_tool(self.spool, "--json")
        self.assertEqual((r.returncode, r.stdout), (0, b""))

    def test_hostile_envelope_is_escaped(self):
        seg = Segment(self.spool, 0, 1)
        seg.message(msg("1K1T47KQQEW00", b"x", account=b"evil\x1b[2J",
                        sender=b"caf\xc3\xa9@ex.example", recipients=[b"bad\xff@x.example"]))
        seg.save()
        r = self.run_tool(self.spool)
        self.assertEqual(r.returncode, 0)
        self.assertNotIn(b"\x1b", r.stdout)
        self.assertIn(b"evil\\x1b[2J", r.stdout)
        r = self.run_tool("--json", self.spool)
        g = json.loads(r.stdout)                    # valid JSON despite the bytes
        self.assertEqual(g["account"], "evil\x1b[2J")
        self.assertEqual(g["sender"], "caf\u00e9@ex.example")
        self.assertEqual(g["recipients"], ["bad\ufffd@x.example"])

    # --- show ---

    def expected_show(self, m):
        flags = " ".join(f for f in FLAGS if f in m["flags"]) or "none"
        lines = [b"X-Vmrelay-Queue-ID: " + m["qid"].encode(),
                 b"X-Vmrelay-Arrival: 2024-05-01T12:00:00.123456Z" if m["received_us"] > 42 else
                 b"X-Vmrelay-Arrival: 1970-01-01T00:00:00.000042Z",
                 b"X-Vmrelay-Account: " + m["account"],
                 b"X-Vmrelay-Client: " + m["client"],
                 b"X-Vmrelay-Helo: " + m["helo"],
                 b"X-Vmrelay-Sender: <" + m["sender"] + b">"]
        lines += [b"X-Vmrelay-Recipient: <" + x + b">" for x in m["recipients"]]
        lines += [b"X-Vmrelay-Flags: " + flags.encode(),
                  b"X-Vmrelay-Size: " + str(len(m["body"])).encode()]
        return b"".join(line + b"\r\n" for line in lines) + m["body"]

    def test_show(self):
        self.standard_spool()
        for m in self.msgs:
            r = self.run_tool(self.spool, "show", m["qid"])
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, self.expected_show(m))
            # The body is the last Size bytes, exactly.
            self.assertEqual(r.stdout[len(r.stdout) - len(m["body"]):], m["body"])

    def test_show_unknown_qid(self):
        self.standard_spool()
        r = self.run_tool(self.spool, "show", "NOSUCHQUEUEID")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b"")
        self.assertIn(b"no message with queue ID NOSUCHQUEUEID", r.stderr)

    # --- check and damage ---

    def test_check_clean(self):
        self.standard_spool()
        r = self.run_tool(self.spool, "check")
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn(b"2 segments, 3 messages, 0 torn", r.stdout)
        self.assertTrue(r.stdout.endswith(b": ok\n"))

    def test_torn_tail_is_not_damage(self):
        a, _ = self.standard_spool()
        a.save(len(a.data) - 100)                  # a crash in the middle of the last message
        r = self.run_tool(self.spool, "check")
        self.assertEqual(r.returncode, 0, r.stdout)
        tail = [x for x in r.stdout.splitlines() if b"torn tail" in x]
        self.assertEqual(len(tail), 1)
        off = int(tail[0].split(b"offset ")[1].split(b":")[0])
        self.assertTrue(self.msgs[2]["offset"] <= off < len(a.data) - 100, tail)
        self.assertIn(b"1 torn (1 at an unterminated tail)", r.stdout)
        r = self.run_tool("--json", self.spool)
        self.assertEqual([json.loads(x)["qid"] for x in r.stdout.splitlines()],
                         ["1K1T47KQQEW00", "1K1T47KQQF501"])
        self.assertEqual(r.stderr, b"")
        r = self.run_tool(self.spool, "show", "1K1T47KQS7W00")
        self.assertEqual(r.returncode, 1)

    def test_damage_in_the_middle(self):
        a, _ = self.standard_spool()
        a.data[self.msgs[0]["offset"] + 60] ^= 0x01   # inside the first message's envelope
        a.save()
        r = self.run_tool(self.spool, "check")
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(b"seg/w0-0000000001.seg: offset %d: damaged records" % self.msgs[0]["offset"],
                      r.stdout)
        self.assertIn(b"DAMAGED", r.stdout)
        # The messages after the damage are still listed, with a hint.
        r = self.run_tool("--json", self.spool)
        self.assertEqual(r.returncode, 0)
        self.assertEqual(sorted(json.loads(x)["qid"] for x in r.stdout.splitlines()),
                         ["1K1T47KQQF501", "1K1T47KQS7W00"])
        self.assertIn(b"check", r.stderr)
        r = self.run_tool(self.spool, "show", "1K1T47KQS7W00")
        self.assertEqual(r.stdout, self.expected_show(self.msgs[2]))

    def test_damaged_segment_header(self):
        a, _ = self.standard_spool()
        a.data[9] ^= 0x01
        a.save()
        r = self.run_tool(self.spool, "check")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"seg/w0-0000000001.seg: UNREADABLE: damaged header", r.stdout)

    # --- errors ---

    def test_missing_dir(self):
        r = self.run_tool(os.path.join(self.tmp, "nope"))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"nope: No such file or directory", r.stderr)

    def test_not_a_spool(self):
        r = self.run_tool(self.tmp, "check")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"not a vmrelay spool", r.stderr)

    def test_bad_usage(self):
        for args in ([], [self.spool, "frobnicate"], [self.spool, "show"],
                     [self.spool, "check", "extra"], ["--bogus", self.spool],
                     ["--json", self.spool, "check"]):
            r = self.run_tool(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertEqual(r.stdout, b"", args)
            self.assertIn(b"vmrelay-spool", r.stderr, args)


if __name__ == "__main__":
    unittest.main()
