"""Runs every end-to-end test (tests/e2e/test_*.py) against a built vmrelay.

    /usr/bin/python3 tests/e2e/run.py [-k PATTERN] [--timeout SECONDS]

One line per test case ("ok", "FAIL", "ERROR", "skip" and its name), the
output of each failure, and last a line "e2e: N passed, N failed, N skipped"
that scripts/test.sh reads. A test case that runs longer than --timeout
(default 180 s) fails instead of hanging the run. Exit status 1 if any test
failed. VMRELAY_BUILD names the build directory (default build/).
"""

import argparse
import os
import signal
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


class CaseTimeout(Exception):
    pass


class Result(unittest.TextTestResult):
    """Prints one line per case as it ends, and arms a per-case alarm."""

    timeout = 180

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.t0 = time.monotonic()   # class set-up errors arrive without startTest

    def startTest(self, test):
        super().startTest(test)
        self.t0 = time.monotonic()

        def expire(signum, frame):
            raise CaseTimeout("test case exceeded %ds" % self.timeout)
        signal.signal(signal.SIGALRM, expire)
        signal.alarm(self.timeout)

    def stopTest(self, test):
        signal.alarm(0)
        super().stopTest(test)

    def _line(self, word, test):
        self.stream.write("%-5s %s (%.1fs)\n" % (word, test.id(), time.monotonic() - self.t0))
        self.stream.flush()

    def addSuccess(self, test):
        unittest.TestResult.addSuccess(self, test)
        self._line("ok", test)

    def addFailure(self, test, err):
        unittest.TestResult.addFailure(self, test, err)
        self._line("FAIL", test)

    def addError(self, test, err):
        unittest.TestResult.addError(self, test, err)
        self._line("ERROR", test)

    def addSkip(self, test, reason):
        unittest.TestResult.addSkip(self, test, reason)
        self._line("skip", test)
        self.stream.write("      %s\n" % reason)

    def addExpectedFailure(self, test, err):
        unittest.TestResult.addExpectedFailure(self, test, err)
        self._line("xfail", test)

    def addUnexpectedSuccess(self, test):
        unittest.TestResult.addUnexpectedSuccess(self, test)
        self._line("FAIL", test)


def cases(suite):
    for t in suite:
        if isinstance(t, unittest.TestSuite):
            yield from cases(t)
        else:
            yield t


def main():
    ap = argparse.ArgumentParser(description="vmrelay end-to-end tests")
    ap.add_argument("-k", dest="pattern", help="only test ids containing this")
    ap.add_argument("--timeout", type=int, default=180, help="seconds per test case")
    args = ap.parse_args()

    sys.path.insert(0, HERE)
    suite = unittest.defaultTestLoader.discover(HERE, pattern="test_*.py", top_level_dir=HERE)
    if args.pattern:
        suite = unittest.TestSuite(t for t in cases(suite) if args.pattern in t.id())
    Result.timeout = args.timeout
    runner = unittest.TextTestRunner(stream=sys.stdout, verbosity=0, resultclass=Result)
    result = runner.run(suite)

    # Load errors (a test file that does not import) arrive as failed cases.
    failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped - len(result.expectedFailures)
    print("e2e: %d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
