#!/usr/bin/python3
"""measure.py - the measuring half of bench/compare.sh.

  measure.py run --tree PID [--tree PID ...] --timeout S -- CMD [ARG ...]
      Runs CMD (the load generator) and prints one line
          wall_s=<monotonic seconds> cpu_s=<server CPU seconds> rc=<exit status>
      where cpu_s is the user+system time the process trees rooted at each
      PID spent while CMD ran. A tree's time is read from /proc/<pid>/stat
      before and after: utime+stime of every live member plus cutime+cstime,
      so a child (a Postfix smtpd or cleanup) that exits and is reaped during
      the run still counts, through its parent. CMD is killed after S seconds
      (rc=124, like timeout(1)).
      With --sink FILE --sink-count N (bench/e2e.sh) the run ends only when
      the smtp-sink -c whose output is FILE has counted N messages: wall_s
      then runs from the load's start until the last message reached that
      far sink, and the line also gives load_s, when the load exited.

  measure.py fsync DIR
      Prints the mean latency in milliseconds of write(6000 bytes) +
      fdatasync() on a scratch file in DIR: what one durable commit costs on
      the spool's disk, for the machine description in RESULTS.md.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_table():
    """Maps every live pid to (ppid, cpu ticks incl. reaped children)."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                stat = f.read()
        except OSError:
            continue            # exited while we looked
        # comm may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        ppid = int(fields[1])
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        table[int(name)] = (ppid, utime + stime + cutime + cstime)
    return table


def tree_ticks(roots):
    """CPU ticks of the process trees under roots (roots included)."""
    table = proc_table()
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen, todo, ticks = set(), [r for r in roots if r in table], 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        ticks += table[pid][1]
        todo.extend(children.get(pid, ()))
    missing = [r for r in roots if r not in table]
    if missing:
        sys.exit(f"measure.py: server process {missing[0]} is not running")
    return ticks


def cmd_run(args):
    before = tree_ticks(args.tree)
    t0 = time.monotonic()
    # The load generator's own output goes to stderr: stdout is the result.
    proc = subprocess.Popen(args.cmd, stdout=sys.stderr)

    def stop(signum, frame):
        # Stopped by compare.sh's cleanup: take the load generator along.
        proc.kill()
        proc.wait()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        rc = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = 124
    load = time.monotonic() - t0
    wall = load
    if args.sink and rc == 0:
        wall = wait_sink(args.sink, args.sink_count, t0 + args.timeout) - t0
        if wall < 0:
            rc = 124
            wall = time.monotonic() - t0
    after = tree_ticks(args.tree)
    extra = f" load_s={load:.6f}" if args.sink else ""
    print(f"wall_s={wall:.6f} cpu_s={(after - before) / CLK_TCK:.2f} rc={rc}{extra}")
    return 0


def sink_count(path):
    """The last mesg=N that smtp-sink -c wrote to path (0 before any)."""
    with open(path, "rb") as f:
        f.seek(max(0, os.fstat(f.fileno()).st_size - 256))
        found = re.findall(rb"mesg=(\d+)", f.read())
    return int(found[-1]) if found else 0


def wait_sink(path, count, deadline):
    """The monotonic time at which the sink had count messages (polled
    every 5 ms), or -1 past deadline."""
    while sink_count(path) < count:
        if time.monotonic() > deadline:
            return -1
        time.sleep(0.005)
    return time.monotonic()


def cmd_fsync(args):
    path = os.path.join(args.dir, f".fsync-probe.{os.getpid()}")
    block, n = b"x" * 6000, 200
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        t0 = time.monotonic()
        for _ in range(n):
            os.write(fd, block)
            os.fdatasync(fd)
        dt = time.monotonic() - t0
    finally:
        os.close(fd)
        os.unlink(path)
    print(f"{dt / n * 1000:.3f}")
    return 0


def main():
    ap = argparse.ArgumentParser(prog="measure.py")
    sub = ap.add_subparsers(dest="what", required=True)
    run = sub.add_parser("run")
    run.add_argument("--tree", type=int, action="append", required=True)
    run.add_argument("--timeout", type=float, required=True)
    run.add_argument("--sink", metavar="FILE")
    run.add_argument("--sink-count", type=int, default=0)
    run.add_argument("cmd", nargs=argparse.REMAINDER)
    fs = sub.add_parser("fsync")
    fs.add_argument("dir")
    args = ap.parse_args()
    if args.what == "run":
        if args.cmd[:1] == ["--"]:
            args.cmd = args.cmd[1:]
        if not args.cmd:
            ap.error("run: no command after --")
        return cmd_run(args)
    return cmd_fsync(args)


if __name__ == "__main__":
    sys.exit(main())
