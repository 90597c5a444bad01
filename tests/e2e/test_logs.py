"""The relay's log (issue 6) against vmrelay --io kernel: with [relay]
log_file its key=value lines go to that file, not to stderr; an SMTP
transaction's line and its delivery attempts' lines carry the same queue
ID; log_level = warn keeps info lines out and errors in; SIGHUP (what
logrotate's postrotate sends) and `vmrelayctl reload` open the file again,
so the lines after a rotation go to a new file at the path; a relay that
cannot start still writes why to the file before it exits.

Delivery goes to a closed port on loopback: every attempt is a deferral.
"""

import os
import re
import signal
import smtplib
import socket
import subprocess
import time
import unittest

import relay
from relay import Relay, message

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (err|warn|info|debug) "
                  r"event=\w+( [a-z_0-9]+=(\"([^\"\\]|\\.)*\"|\S*))*$")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FileLogRelay(Relay):
    """A relay logging to [relay] log_file at a given level, on a port
    chosen here (at warn, event=start, which names the ports, is not
    logged). log() reads that file; stderr() what went to stderr."""

    def __init__(self, level="info"):
        super().__init__(tls=False, workers=2)
        self.file_path = os.path.join(self.dir, "vmrelay.log")
        self.port = free_port()
        with open(self.config_path) as f:
            text = f.read()
        text = text.replace("log_level = info",
                            "log_level = %s\nlog_file = %s" % (level, self.file_path))
        text = re.sub(r"(?m)^listen = .*$", "listen = 127.0.0.1:%d" % self.port, text)
        with open(self.config_path, "w") as f:
            f.write(text)

    def start(self, timeout=10):
        err = open(self.log_path, "ab")
        self.proc = subprocess.Popen([relay.VMRELAY, "-c", self.config_path, "--io", "kernel"],
                                     stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        err.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("vmrelay exited with %d:\n%s"
                                   % (self.proc.returncode, self.stderr()))
            try:
                if os.path.exists(self.ctl_path):
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        self.kill()
        raise RuntimeError("vmrelay did not start within %ds:\n%s" % (timeout, self.stderr()))

    def log(self, offset=0):
        try:
            with open(self.file_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def stderr(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


def send(r, subject, rcpts=("a@example.net",)):
    """One message from vps1; returns its queue ID."""
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10) as s:
        s.ehlo("vps1.example.com")
        s.mail("user@example.com")
        for t in rcpts:
            s.rcpt(t)
        code, text = s.data(message(subject, to=rcpts[0]))
    assert code == 250, (code, text)
    return relay.queued_qid(b"%d %s" % (code, text))


class InfoLogTest(unittest.TestCase):

    def setUp(self):
        self.r = FileLogRelay("info").start()

    def tearDown(self):
        self.r.stop()
        self.r.cleanup()

    def test_lines_go_to_the_file_and_share_the_queue_id(self):
        qid = send(self.r, "logged", rcpts=("a@example.net", "b@example.net"))
        self.assertIsNotNone(qid)
        self.r.wait_log(r"event=delivery qid=%s .*rcpt=\"b@example\.net\"" % qid, timeout=10)
        log = self.r.log()
        accepted = re.findall(r"(?m)^.* event=accepted qid=%s .*$" % qid, log)
        self.assertEqual(len(accepted), 1, log)
        self.assertIn("account=vps1", accepted[0])
        self.assertRegex(accepted[0], r" nrcpt=2 ")
        attempts = re.findall(r"(?m)^.* event=delivery qid=%s .*$" % qid, log)
        self.assertGreaterEqual(len(attempts), 2)
        for a in attempts:
            self.assertRegex(a, r" vps=vps1 .* result=deferred .*reply=\"451 ")
        self.assertIn("event=start ", log)
        for line in log.splitlines():
            self.assertRegex(line, LINE)
        # stderr has none of it
        self.assertNotIn("event=", self.r.stderr())

    def test_sighup_and_reload_open_the_file_again(self):
        first = send(self.r, "before")
        self.r.wait_log(r"event=accepted qid=%s " % first)
        rotated = self.r.file_path + ".1"
        os.rename(self.r.file_path, rotated)       # what logrotate does
        self.r.signal(signal.SIGHUP)
        self.r.wait_log(r"event=reload accounts=2", timeout=5)
        second = send(self.r, "after")
        self.r.wait_log(r"event=accepted qid=%s " % second)
        with open(rotated) as f:
            old = f.read()
        self.assertIn("event=accepted qid=%s " % first, old)
        self.assertNotIn(second, old)
        self.assertNotIn(first, self.r.log())

        # the control socket's reload does the same
        os.rename(self.r.file_path, rotated)
        p = self.r.ctl("reload")
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.r.wait_log(r"event=reload accounts=2", timeout=5)
        third = send(self.r, "again")
        self.r.wait_log(r"event=accepted qid=%s " % third)
        self.assertNotIn(second, self.r.log())


class FailedStartTest(unittest.TestCase):

    def test_a_relay_that_cannot_start_says_why_in_its_file(self):
        # the lines go through the logging thread: its rings are written
        # out before the relay exits with the error
        r = FileLogRelay("info")
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", r.port))
            taken.listen()
            try:
                with self.assertRaises(RuntimeError):
                    r.start()
                self.assertNotEqual(r.proc.returncode, 0)
                log = r.log()
                self.assertRegex(log, r"(?m)^\S+ err event=io_failed error=\"listen "
                                      r"127\.0\.0\.1:%d: Address already in use\"$" % r.port)
                self.assertRegex(log, r"(?m)^\S+ info event=stop status=[1-9]\d*$")
            finally:
                r.cleanup()


class WarnLogTest(unittest.TestCase):

    def test_warn_keeps_info_out_and_errors_in(self):
        r = FileLogRelay("warn").start()
        try:
            qid = send(r, "quiet")
            r.write_accounts([{"id": "broken", "colour": "red"}])
            p = r.ctl("reload")
            self.assertEqual(p.returncode, 1)
            r.wait_log(r"event=reload_failed ")
            log = r.log()
            for event in ("start", "accepted", "delivery", "refused"):
                self.assertNotIn("event=%s " % event, log)
            self.assertNotIn(qid, log)
            self.assertRegex(log, r"(?m)^\S+ err event=reload_failed accounts=\S+ error=\".*colour")
            for line in log.splitlines():
                self.assertRegex(line, r"^\S+ (warn|err) ")
        finally:
            r.stop()
            r.cleanup()


if __name__ == "__main__":
    unittest.main()
