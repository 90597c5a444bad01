#!/usr/bin/python3
"""report.py - the reporting half of bench/e2e.sh.

  report.py RUNS META [--markdown OUT]

RUNS holds one verified run a line, tab separated: engine, round, messages,
wall_s (load start to the last message at the far sink), load_s (load start
to the load's exit), cpu_s (the relay's process tree: Postfix's master and
children plus opendkim; vmrelay), ctl ("-", or "sent|seconds|cpu_s|
idle_cpu_s|reply times" of the control commands: cpu_s ctlload.py's own,
idle_cpu_s the relay's for the same commands sent to it idle) and the DKIM
check's line. META is "key<TAB>value" lines. Prints the table (medians;
ratios to Postfix as medians of the per-round ratios, each from runs
moments apart), what the commands alone cost the idle relay against its
CPU for the messages, the vmrelay / vmrelay+ctl pairs' ratios (relay CPU
per 1000 messages, accepting and end-to-end rates: median and range over
the pairs) and the targets; with --markdown writes it with the machine, the command,
the configurations and bench_dkim's figures to OUT.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from report import parse_args, read_meta  # noqa: E402  (bench/report.py)

ENGINES = ("postfix", "vmrelay", "vmrelay+ctl")
TARGET_VS_POSTFIX = 10.0        # issue 5: vmrelay >= 10x Postfix end to end
TARGET_CTL = 0.05               # issue 6: 1000 commands cost < 5% (reported)


def read_runs(path):
    runs = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            fields = line.rstrip("\n").split("\t")
            if len(fields) != 8 or fields[0] not in ENGINES:
                sys.exit(f"report.py: {path}:{n}: malformed run line")
            engine, rnd, msgs, wall, load, cpu, ctl, check = fields
            runs.setdefault(engine, {})[int(rnd)] = {
                "msgs": int(msgs), "wall": float(wall), "load": float(load), "cpu": float(cpu),
                "ctl": ctl, "check": check}
    return runs


def per_round_ratio(runs, a, b, key="wall"):
    """Median over the rounds both ran of rate(a) / rate(b), the rates end
    to end (key wall) or of acceptance (key load)."""
    rounds = sorted(set(runs.get(a, {})) & set(runs.get(b, {})))
    if not rounds:
        return None
    return statistics.median(
        (runs[a][r]["msgs"] / runs[a][r][key]) / (runs[b][r]["msgs"] / runs[b][r][key])
        for r in rounds)


def ctl_fields(r):
    """(commands sent, seconds, ctlload.py's CPU s, the relay's CPU s for the
    commands alone, reply times text)."""
    sent, secs, cpu, idle, times = r["ctl"].split("|", 4)
    return int(sent), float(secs), float(cpu), float(idle), times


def pair_ratios(runs, key):
    """vmrelay+ctl / vmrelay per round both ran (a pair run back to back):
    key "cpu" compares the relay's CPU per message (above 1: the commands
    cost CPU), "load" and "wall" the accepting and end-to-end rates (below
    1: slower)."""
    a, b = runs.get("vmrelay+ctl", {}), runs.get("vmrelay", {})
    out = []
    for r in sorted(set(a) & set(b)):
        x, y = a[r], b[r]
        if key == "cpu":
            out.append((x["cpu"] / x["msgs"]) / (y["cpu"] / y["msgs"]))
        else:
            out.append((x["msgs"] / x[key]) / (y["msgs"] / y[key]))
    return out


def ctl_lines(runs):
    lines = []
    pairs = len(pair_ratios(runs, "cpu"))
    ctl = runs["vmrelay+ctl"].values()
    fields = [ctl_fields(r) for r in ctl]
    sent = statistics.median(f[0] for f in fields)
    secs = statistics.median(f[1] for f in fields)
    own = statistics.median(f[2] for f in fields)
    cpu_with = statistics.median(r["cpu"] / r["msgs"] * 1000 for r in ctl)
    cpu_without = statistics.median(r["cpu"] / r["msgs"] * 1000 for r in runs["vmrelay"].values())
    verdicts = []
    # the commands' own cost: the idle relay's CPU for them, against the
    # CPU the relay spends on a run's messages without them
    idle = [f[3] for f in fields]
    run_cpu = cpu_without * statistics.median(r["msgs"] for r in ctl) / 1000
    share = statistics.median(idle) / run_cpu
    verdicts.append(f"the commands' own CPU {'within' if share < TARGET_CTL else 'NOT within'}")
    lines.append(f"the commands alone, sent to the idle relay: {statistics.median(idle):.3f} CPU s "
                 f"(median; {min(idle):.3f} to {max(idle):.3f}), {100 * share:.1f}% of the "
                 f"{run_cpu:.2f} s the relay spends on a run's messages without them")
    lines.append(f"vmrelay+ctl against vmrelay: {pairs} pairs run back to back, the order "
                 "alternating; medians of the pairs' ratios (range):")
    for key, what, cost in (("cpu", "relay CPU per 1000 messages", 1),
                            ("load", "accepting rate", -1),
                            ("wall", "end-to-end rate", -1)):
        rs = pair_ratios(runs, key)
        med = statistics.median(rs)
        within = (med - 1) * cost < TARGET_CTL
        verdicts.append(f"{what} {'within' if within else 'NOT within'}")
        extra = (f" ({cpu_without:.3f} s without, {cpu_with:.3f} s with; medians of the runs)"
                 if key == "cpu" else "")
        lines.append(f"  {what:<28} {100 * (med - 1):+6.1f}%  ({100 * (min(rs) - 1):+.1f}% to "
                     f"{100 * (max(rs) - 1):+.1f}%){extra}")
    lines.append(f"  commands: {sent:.0f} sent in {secs:.1f} s a run (by the last delivery); "
                 f"ctlload.py, the client, used {own:.2f} CPU s a run, not counted above")
    lines.append(f"target (issue 6): 1000 control commands cost less than {100 * TARGET_CTL:g}% "
                 f"of the throughput (reported, not asserted); with {sent:.0f} here, the "
                 "medians: " + ", ".join(verdicts))
    return lines


def table(runs):
    lines = [f"{'engine':<12} {'msgs/s e2e':>10} {'wall s':>7} {'accept msgs/s':>13} "
             f"{'CPU s/1000':>10} {'vs Postfix':>10}"]
    for e in ENGINES:
        if e not in runs:
            continue
        rs = list(runs[e].values())
        rate = statistics.median(r["msgs"] / r["wall"] for r in rs)
        wall = statistics.median(r["wall"] for r in rs)
        accept = statistics.median(r["msgs"] / r["load"] for r in rs)
        cpu = statistics.median(r["cpu"] / r["msgs"] * 1000 for r in rs)
        vs = per_round_ratio(runs, e, "postfix")
        lines.append(f"{e:<12} {rate:>10.0f} {wall:>7.2f} {accept:>13.0f} {cpu:>10.3f} "
                     f"{(f'{vs:.2f}x' if vs else '-'):>10}")
    lines.append("")
    vs = per_round_ratio(runs, "vmrelay", "postfix")
    if vs is not None:
        lines.append(f"target: vmrelay at {vs:.2f}x Postfix end to end (target >= {TARGET_VS_POSTFIX:g}x): "
                     + ("met" if vs >= TARGET_VS_POSTFIX else "NOT met"))
    if pair_ratios(runs, "cpu"):
        lines += ctl_lines(runs)
    return "\n".join(lines)


def markdown(out, runs, meta, text):
    def one(key, default="?"):
        return meta.get(key, [default])[0]

    w = ["# vmrelay end-to-end benchmark: delivery and DKIM signing", "",
         "Generated by `bench/e2e.sh` - do not edit by hand: run the script again.", "",
         "smtp-source -> relay -> smtp-sink, every message DKIM-signed (Ed25519) by the relay "
         "and relayed to a far smtp-sink of its own: Postfix with OpenDKIM against vmrelay.", "",
         "## Result", "", "```", text, "```", "",
         "msgs/s e2e = messages / time from the start of the measured smtp-source run until "
         "the far sink counted the last of them (polled every 5 ms); accept msgs/s = "
         "messages / time until smtp-source exited (the 250s). CPU = user + system seconds "
         "of the relay's process tree over the run (Postfix: master and all its children, and "
         "opendkim; vmrelay: its one process), sinks and load excluded. Medians over the rounds; "
         "the engines take turns in an order rotated each round, and ratios are medians of "
         "per-round ratios of runs made moments apart.", "",
         "## Machine and run", "",
         f"- date: {one('date')}",
         f"- CPUs: {one('nproc')} x {one('cpu')} (shared with other engineers' builds and tests: "
         "the load average below is the machine's, not the benchmark's)",
         f"- kernel: {one('kernel')}",
         f"- load average (1 min) before / after: {one('loadavg_start')} / {one('loadavg_end')}",
         f"- spool / queue disk: {one('disk')}",
         f"- write(6000 bytes) + fdatasync there, mean of 200, before / after: "
         f"{one('fsync_ms_start')} / {one('fsync_ms_end')} ms",
         f"- command: `{one('command')}`",
         f"- load, per engine and round: `{one('load')}`",
         f"- rounds: {one('rounds')}"
         + (f"; vmrelay / vmrelay+ctl pairs, back to back, the order alternating: "
            f"{one('ctl_rounds')}" if "ctl_rounds" in meta else "")
         + f"; warm-up before each measured run, delivered before it starts: "
         f"{one('warmup')} messages", "",
         "## What was measured, and how it was checked", ""]
    w += [f"- {n}" for n in meta.get("engine_note", [])]
    w += [f"- Every run: the far sink kept every message (smtp-sink -D); bench/e2e/dkimcheck.py "
          f"found each once and each with a DKIM-Signature a=ed25519-sha256 d=bench.example "
          f"s=ed1, and verified {one('sample')} of them, spread over the run, with dkimpy "
          "against the public key.", "",
          "Per run (round: msgs/s end to end, accept msgs/s, relay CPU s per 1000 messages, DKIM check):", "", "```"]
    for e in ENGINES:
        for rnd, r in sorted(runs.get(e, {}).items()):
            w.append(f"{e:<12} round {rnd}: {r['msgs'] / r['wall']:7.0f} {r['msgs'] / r['load']:7.0f} "
                     f"{r['cpu'] / r['msgs'] * 1000:6.3f}  {r['check']}")
            if r["ctl"] != "-":
                n, secs, cpu, idle, times = ctl_fields(r)
                w.append(f"{'':<12}   ctl: {n} commands in {secs} s, ctlload.py {cpu:.2f} CPU s, "
                         f"the relay {idle:.3f} CPU s for them alone; reply times {times}")
    w += ["```", ""]
    for key, title in (("postfix_conf", "Postfix: `postconf -n`"),
                       ("opendkim_conf", "OpenDKIM: opendkim.conf"),
                       ("vmrelay_conf", "vmrelay: relay.ini"),
                       ("vmrelay_account", "vmrelay: the bench account")):
        if key in meta:
            w += [f"### {title}", "", "```"] + meta[key] + ["```", ""]
    path = one("dkim_speed_file", "")
    if path:
        with open(path) as f:
            dk = f.read().rstrip("\n")
        w += ["## DKIM signing per core against `openssl speed` (bench/dkim)", "",
              "`build-bench/bench/dkim/bench_dkim` (defaults), run by bench/e2e.sh after the "
              "rounds above: 6 KB messages, DKIM signatures per user CPU second of one "
              "core against `openssl speed`'s signatures/s for the same kind of key on this "
              "machine in the same run (target >= 90% for ed25519 and rsa-2048):", "",
              "```", dk, "```", ""]
    with open(out, "w") as f:
        f.write("\n".join(w))


def main():
    args = parse_args()
    runs = read_runs(args.runs)
    meta = read_meta(args.meta)
    text = table(runs)
    print(text)
    if args.markdown:
        markdown(args.markdown, runs, meta, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
