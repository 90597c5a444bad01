#!/usr/bin/python3
"""report.py - the reporting half of bench/compare.sh.

  report.py RUNS META [--markdown OUT]

RUNS holds one verified measurement a line, "engine round messages wall_s
cpu_s fsync_ms sessions_per_s p99_ms" (tab separated; fsync_ms is the
disk's write + fdatasync latency probed just before the run; the last two
are vmrelay-bench's figures, "-" under smtp-source, which has none). META holds "key<TAB>value" lines written by
compare.sh (machine, command, load, per-engine verification, file
attachments). Prints the comparison table: per engine the median msgs/s,
the median wall time, the median server CPU seconds per 1000 messages, and
the ratios of the median msgs/s to Postfix's and smtp-sink's; then the
targets. With --markdown, writes the same table and everything needed to
reproduce and judge it to OUT (bench/RESULTS.md).
"""

import argparse
import statistics
import sys

ENGINES = ("smtp-sink", "postfix", "vmrelay", "vmrelay-dpdk")
TARGET_VS_POSTFIX = 6.0         # vmrelay >= 6x Postfix
TARGET_VS_SINK = 0.60           # vmrelay >= 60% of smtp-sink
TARGET_DPDK_VS_SINK = 0.80      # vmrelay on DPDK >= 80% of smtp-sink (issue 3)


def read_runs(path):
    runs = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.split()
            if len(fields) != 8 or fields[0] not in ENGINES:
                sys.exit(f"report.py: {path}:{n}: malformed run line")
            engine, rnd, msgs, wall, cpu, fsync, sess, p99 = fields
            runs.setdefault(engine, []).append(
                {"round": int(rnd), "msgs": int(msgs), "wall": float(wall), "cpu": float(cpu),
                 "fsync": float(fsync), "sess": None if sess == "-" else float(sess),
                 "p99": None if p99 == "-" else float(p99)})
    return runs


def read_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("\t")
            meta.setdefault(key, []).append(value)
    return meta


def parse_args():
    """RUNS META [--markdown OUT], as this report and bench/e2e/report.py take them."""
    ap = argparse.ArgumentParser(prog="report.py")
    ap.add_argument("runs")
    ap.add_argument("meta")
    ap.add_argument("--markdown", metavar="OUT")
    return ap.parse_args()


def summarise(runs):
    """Median msgs/s, wall and CPU per 1000 messages of each engine."""
    out = {}
    for engine, rs in runs.items():
        out[engine] = {
            "rate": statistics.median(r["msgs"] / r["wall"] for r in rs),
            "wall": statistics.median(r["wall"] for r in rs),
            "cpu_k": statistics.median(r["cpu"] / r["msgs"] * 1000 for r in rs),
        }
        if all(r["p99"] is not None for r in rs):
            out[engine]["sess"] = statistics.median(r["sess"] for r in rs)
            out[engine]["p99"] = statistics.median(r["p99"] for r in rs)
    return out


def table(summary):
    # sessions/s and p99 of the final reply: only vmrelay-bench measures them
    lat = all("p99" in s for s in summary.values())
    head = ("engine", "msgs/s", "wall s") + (("sessions/s", "p99 ms") if lat else ()) + \
        ("CPU s/1000 msgs", "vs Postfix", "vs smtp-sink")
    rows = [head]
    pf = summary.get("postfix", {}).get("rate")
    sink = summary.get("smtp-sink", {}).get("rate")
    for engine in ENGINES:
        s = summary.get(engine)
        if s is None:
            continue
        rows.append((engine, f"{s['rate']:.0f}", f"{s['wall']:.2f}")
                    + ((f"{s['sess']:.1f}", f"{s['p99']:.3f}") if lat else ())
                    + (f"{s['cpu_k']:.3f}",
                     f"{s['rate'] / pf:.2f}x" if pf else "-",
                     f"{s['rate'] / sink * 100:.1f}%" if sink else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells))
    return lines


def targets(summary):
    """One line per target that can be judged from what was measured."""
    vr = summary.get("vmrelay", {}).get("rate")
    if vr is None:
        return ["targets: not judged (vmrelay not measured)"]
    lines = []
    for other, want, fmt in (("postfix", TARGET_VS_POSTFIX, "{:.2f}x Postfix (target >= {:.0f}x)"),
                             ("smtp-sink", TARGET_VS_SINK, "{:.1%} of smtp-sink (target >= {:.0%})")):
        base = summary.get(other, {}).get("rate")
        if base is None:
            continue
        got = vr / base
        verdict = "met" if got >= want else "NOT met"
        lines.append("target: vmrelay at " + fmt.format(got, want) + ": " + verdict)
    dpdk, sink = summary.get("vmrelay-dpdk", {}).get("rate"), summary.get("smtp-sink", {}).get("rate")
    if dpdk is not None:
        verdict = "met" if dpdk > vr else "NOT met"
        lines.append(f"target: vmrelay-dpdk ahead of vmrelay ({dpdk / vr:.2f}x): {verdict}")
    if dpdk is not None and sink:
        verdict = "met" if dpdk / sink >= TARGET_DPDK_VS_SINK else "NOT met"
        lines.append(f"target: vmrelay-dpdk at {dpdk / sink:.1%} of smtp-sink "
                     f"(target >= {TARGET_DPDK_VS_SINK:.0%}): {verdict}")
    return lines


def markdown(out, runs, meta, text):
    def one(key):
        return meta.get(key, ["?"])[0]

    md = [
        f"# vmrelay benchmark results: {one('path').split(':')[0]}",
        "",
        f"Network path: {one('path')}.",
        "",
        "Generated by `bench/compare.sh` - do not edit by hand: run the script again.",
        "",
        "## Result",
        "",
        "```",
        *text,
        "```",
        "",
        "Medians over the rounds; each engine was measured once per round, in an order",
        "rotated every round, so that machine noise falls on all engines alike.",
        "msgs/s = messages / wall time of the load run (monotonic clock, from",
        "its start to its exit). CPU = user + system seconds of the server's whole",
        "process tree during that run (for Postfix: master and every smtpd, cleanup,",
        "qmgr, trivial-rewrite... child, reaped children included, and the smtp",
        "clients relaying to the sink meanwhile; for vmrelay its one process, delivery",
        "threads included). With vmrelay-bench as the load, sessions/s and p99 ms (of",
        "the final reply to a message, from its last octet) are its figures.",
        "",
        "The other results, each written by the script that measured it: the scale",
        "curves (RESULTS-scale.md with scale.png over loopback, RESULTS-scale-veth.md",
        "with scale-veth.png over veth, bench/scale.sh), end to end with DKIM against",
        "Postfix + OpenDKIM and under control commands (RESULTS-e2e.md, bench/e2e.sh),",
        "DPDK (RESULTS-dpdk.md).",
        "",
        "![scale curves over loopback](scale.png)",
        "",
        "## Machine and run",
        "",
        f"- date: {one('date')}",
        f"- CPUs: {one('nproc')} x {one('cpu')}",
        f"- kernel: {one('kernel')}",
        f"- load average (1 min) before / after: {one('loadavg_start')} / {one('loadavg_end')}"
        " (anything else running skews every engine; the rotation spreads it)",
        f"- spool / queue disk: {one('disk')}",
        f"- write(6000 bytes) + fdatasync there, mean of 200, before / after: "
        f"{one('fsync_ms_start')} / {one('fsync_ms_end')} ms (a durable queue waits for this;"
        " it varies with other I/O on the disk)",
        f"- command: `{one('command')}`",
        f"- load, per engine and round: `{one('load')}`",
        f"- rounds: {one('rounds')}; warm-up before each measured run: {one('warmup')} messages",
        "",
        "## What was measured, and how it was checked",
        "",
    ]
    md += [f"- {v}" for v in meta.get("engine_note", []) + meta.get("note", [])]
    if "postfix" in runs and "vmrelay" in runs:
        md += [
            "",
            "The measured path is the same for both servers: accept the message and queue",
            "it durably (on disk, fsynced) before the 250 reply, and meanwhile relay the",
            "queue to a second smtp-sink of its own (Postfix's relayhost, vmrelay's",
            "[delivery] smarthost), as in production; the figure is of accepted mail,",
            "and the next run starts once the relay sink has it all. bench/e2e.sh",
            "(RESULTS-e2e.md) times the same path until the last message arrived there,",
            "DKIM-signed.",
        ]
    md += [
        "",
        "## Every run",
        "",
        "fdatasync ms: the disk's write(6000 bytes) + fdatasync latency, probed just",
        "before the run; vmrelay's and Postfix's figures move with it.",
        "",
        "| engine | round | messages | wall s | msgs/s | server CPU s | fdatasync ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for engine in ENGINES:
        for r in sorted(runs.get(engine, []), key=lambda r: r["round"]):
            md.append(f"| {engine} | {r['round']} | {r['msgs']} | {r['wall']:.3f} "
                      f"| {r['msgs'] / r['wall']:.0f} | {r['cpu']:.2f} | {r['fsync']:.3f} |")
    for key, title in (("postfix_conf", "Postfix settings (`postconf -n` of the private instance)"),
                       ("vmrelay_conf", "vmrelay configuration"),
                       ("dpdk_conf", "vmrelay-dpdk configuration")):
        if key in meta:
            md += ["", f"## {title}", "", "```", *meta[key], "```"]
    with open(out, "w") as f:
        f.write("\n".join(md) + "\n")


def main():
    args = parse_args()
    runs = read_runs(args.runs)
    if not runs:
        sys.exit("report.py: no runs to report")
    meta = read_meta(args.meta)
    summary = summarise(runs)
    text = table(summary) + [""] + targets(summary)
    print("\n".join(text))
    if args.markdown:
        markdown(args.markdown, runs, meta, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
