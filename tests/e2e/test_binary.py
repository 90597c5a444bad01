"""The vmrelay command itself: --check, bad inputs (exit 2 with a message that
says where), --io dpdk (not built yet), the start/stop log lines, SIGHUP
reloading the accounts file (a bad file keeps the old table), SIGTERM.
"""

import os
import signal
import smtplib
import subprocess
import unittest

import relay
from relay import ACCOUNTS, OUTSIDER, VMRELAY, Relay


def run(*args):
    p = subprocess.run([VMRELAY] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=30)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def mail_from(r, source):
    """The reply code to MAIL from the given source address."""
    with smtplib.SMTP("127.0.0.1", r.port, timeout=10, source_address=(source, 0)) as s:
        s.ehlo("client.example")
        return s.mail("user@example.com")[0]


class BinaryTest(unittest.TestCase):

    def setUp(self):
        self.relay = Relay()

    def tearDown(self):
        self.relay.stop()
        self.relay.cleanup()

    def test_check_ok(self):
        code, out, err = run("-c", self.relay.config_path, "--check")
        self.assertEqual(code, 0, err)
        self.assertIn("ok", out)
        self.assertIn("2 accounts", out)
        self.assertIn("TLS on", out)
        self.assertFalse(os.path.exists(self.relay.spool_dir), "--check touched the spool")

    def test_bad_config_names_file_and_line(self):
        with open(self.relay.config_path, "a") as f:
            f.write("listn = 1.2.3.4:25\n")
        code, _, err = run("-c", self.relay.config_path, "--check")
        self.assertEqual(code, 2)
        self.assertRegex(err, r"relay\.ini:\d+: unknown key 'listn'")

    def test_bad_accounts_line(self):
        with open(self.relay.accounts_path, "a") as f:
            f.write('{"id": "broken", "ips": ["not-an-ip"]}\n')
        for args in (["--check"], []):
            code, _, err = run("-c", self.relay.config_path, *args)
            self.assertEqual(code, 2)
            self.assertIn("accounts.jsonl:3:", err)

    def test_quota_over_cap(self):
        self.relay.write_accounts(ACCOUNTS + [{"id": "big", "ips": ["192.0.2.99"],
                                               "daily_quota": 10001}])
        code, _, err = run("-c", self.relay.config_path, "--check")
        self.assertEqual(code, 2)
        self.assertIn("accounts.jsonl:3:", err)

    def test_missing_tls_key(self):
        with open(self.relay.config_path) as f:
            text = f.read()
        with open(self.relay.config_path, "w") as f:
            f.write(text.replace(relay.test_cert()[1], "/nonexistent/tls.key"))
        code, _, err = run("-c", self.relay.config_path, "--check")
        self.assertEqual(code, 2)
        self.assertIn("/nonexistent/tls.key", err)

    def test_usage_errors(self):
        self.assertEqual(run()[0], 2)
        self.assertEqual(run("-c")[0], 2)
        code, _, err = run("-c", self.relay.config_path, "--io", "magic")
        self.assertEqual(code, 2)
        self.assertIn("magic", err)
        code, _, err = run("-c", "/nonexistent/relay.ini")
        self.assertEqual(code, 2)
        self.assertIn("/nonexistent/relay.ini", err)

    def test_dpdk_needs_its_settings(self):
        """DPDK mode (test_dpdk.py runs it) refuses a configuration without
        [dpdk] before it starts anything, --check included."""
        code, _, err = run("-c", self.relay.config_path, "--io", "dpdk")
        self.assertEqual(code, 2)
        self.assertIn("[dpdk] eal is required with io = dpdk", err)
        text = open(self.relay.config_path).read().replace("mode = kernel", "mode = dpdk")
        with open(self.relay.config_path, "w") as f:
            f.write(text + "\n[dpdk]\neal = -l 0-1 --no-huge\nip = 10.77.0.1/24\n")
        code, _, err = run("-c", self.relay.config_path, "--check")
        self.assertEqual(code, 2)
        self.assertIn("listen 127.0.0.1:0: not [dpdk] ip 10.77.0.1/24 nor 0.0.0.0", err)

    def test_start_and_stop_lines(self):
        r = self.relay.start()
        log = r.log()
        self.assertRegex(log, r"event=spool_recovered .*messages=0 torn=0")
        self.assertRegex(log, r"event=start version=\S+ .*workers=2 .*listen=\"127\.0\.0\.1:%d,"
                         % r.port)
        self.assertEqual(r.stop(), 0)
        self.assertIn("event=stop", r.log())

    def test_sighup_reloads_accounts(self):
        r = self.relay.start()
        self.assertEqual(mail_from(r, OUTSIDER), 550)

        # A bad file: logged with its line, the old table stays.
        with open(r.accounts_path, "a") as f:
            f.write("{not json\n")
        r.signal(signal.SIGHUP)
        self.assertIsNotNone(r.wait_log(r"event=reload_failed .*accounts\.jsonl:3"))
        self.assertEqual(mail_from(r, "127.0.0.1"), 250)

        # A good one: 127.0.0.2 becomes vps3.
        r.write_accounts(ACCOUNTS + [{"id": "vps3", "ips": [OUTSIDER],
                                      "domains": ["example.com"]}])
        r.signal(signal.SIGHUP)
        self.assertIsNotNone(r.wait_log(r"event=reload accounts=3"))
        self.assertEqual(mail_from(r, OUTSIDER), 250)
        self.assertEqual(mail_from(r, "127.0.0.1"), 250)
        self.assertEqual(r.stop(), 0)


if __name__ == "__main__":
    unittest.main()
