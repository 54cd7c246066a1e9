#!/usr/bin/env python3
"""Helpers of scripts/sidebyside (measurement arithmetic, probe parsing, report).

  sbs.py snap PID...                 one JSON line: time, /proc/stat cpu lines, CPU ticks of each pid (all threads)
  sbs.py row CFG N RUN A B NETA NETB PROBE TWSTATS   append one results.tsv row (stdout)
  sbs.py report RESDIR [PNG]         median [min-max] tables over the runs in RESDIR, ratios, plot
"""
import json
import os
import re
import statistics
import sys
import time

HZ = os.sysconf("SC_CLK_TCK")
GEN_CPU, BOX_CPU = 0, 1
FIELDS = ["run", "N", "config", "fwd_pps", "offered_pps", "loss_pct", "box_busy_pct", "box_softirq_pct",
          "box_us_per_pkt", "pps_per_box_cpu_s", "cpu0_busy_pct", "gen_proc_pct", "sink_etc_pct",
          "torwart_proc_pct", "napi_pct", "steal_pct", "probe_p50_ms", "probe_p99_ms", "probe_loss_pct",
          "tw_lost", "flows", "foreign_pct", "offered_rate", "torwart_user_pct"]


def proc_ticks(pid):
    """[utime, stime] of every thread of pid (USER_HZ ticks); 0 if gone."""
    tot = [0, 0]
    try:
        for t in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{t}/stat") as f:
                    s = f.read()
            except OSError:
                continue
            rest = s[s.rindex(")") + 2:].split()
            tot[0] += int(rest[11])
            tot[1] += int(rest[12])
    except OSError:
        pass
    return tot


def foreign_ticks(root):
    """CPU ticks (own + reaped children) of every user process that is not ours
    (not a descendant of pid root): other people's work on this shared machine."""
    info = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        rest = s[s.rindex(")") + 2:].split()
        flags = int(rest[6])
        info[d] = (rest[1], flags & 0x00200000, sum(int(x) for x in rest[11:15]))
    tot = 0
    for pid, (ppid, kthread, ticks) in info.items():
        if kthread:
            continue
        p, ours = pid, False
        while p in info and p not in ("0", "1"):
            if p == root:
                ours = True
                break
            p = info[p][0]
        if not ours:
            tot += ticks
    return tot


def snap(pids):
    cpus = {}
    with open("/proc/stat") as f:
        for line in f:
            p = line.split()
            if re.fullmatch(r"cpu\d+", p[0]):
                cpus[p[0]] = list(map(int, p[1:9]))  # user nice system idle iowait irq softirq steal
    out = {"t": time.time(), "cpus": cpus, "pids": {p: proc_ticks(p) for p in pids if p},
           "foreign": foreign_ticks(os.environ.get("SBS_ROOT", "1"))}
    print(json.dumps(out))


def cpu_delta(a, b, c):
    d = [y - x for x, y in zip(a["cpus"][f"cpu{c}"], b["cpus"][f"cpu{c}"])]
    tot = sum(d) or 1
    user, nice, system, idle, iowait, irq, softirq, steal = d
    busy = user + nice + system + irq + softirq
    return {"busy": 100 * busy / tot, "si": 100 * (softirq + irq) / tot, "steal": 100 * steal / tot,
            "busy_s": busy / HZ}


def percentile(v, q):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def probe(path, expected):
    rtts = []
    try:
        with open(path) as f:
            for line in f:
                m = re.search(r"time=([\d.]+) ms", line)
                if m:
                    rtts.append(float(m.group(1)))
    except OSError:
        pass
    loss = 100.0 * (expected - len(rtts)) / expected if expected else 0.0
    return percentile(rtts, 0.5), percentile(rtts, 0.99), max(loss, 0.0)


def row(cfg, n, run, a, b, neta, netb, probe_path, probe_expected, twstats_a, twstats_b, roles, rate=""):
    a, b = json.loads(a), json.loads(b)
    roles = dict(r.split("=", 1) for r in roles.split(",") if "=" in r)  # gen=PID,tw=PID,napi=PID+PID
    dt = b["t"] - a["t"]
    ia, oa = map(int, neta.split())
    ib, ob = map(int, netb.split())
    off, fwd = (ib - ia) / dt, (ob - oa) / dt
    box, c0 = cpu_delta(a, b, BOX_CPU), cpu_delta(a, b, GEN_CPU)

    def pct(role, which=(0, 1)):
        t = 0
        for p in filter(None, roles.get(role, "").split("+")):
            for i in which:
                t += b["pids"].get(p, [0, 0])[i] - a["pids"].get(p, [0, 0])[i]
        return 100.0 * t / HZ / dt

    gen, tw, napi, tw_user = pct("gen"), pct("tw"), pct("napi"), pct("tw", (0,))
    # the box's cost: every busy tick of the box core. Everything of the box is
    # pinned there (kernel: RPS; torwart: the process and its veth NAPI threads).
    us = box["busy"] / 100 * 1e6 / fwd if fwd > 0 else float("nan")
    per_s = fwd / (box["busy"] / 100) if box["busy"] > 0.5 else float("nan")
    p50, p99, ploss = probe(probe_path, int(probe_expected))
    drops, flows = "", ""
    if twstats_a and twstats_b and os.path.exists(twstats_b):
        try:
            sa, sb = json.load(open(twstats_a)), json.load(open(twstats_b))
            ca, cb = sa.get("counters", {}), sb.get("counters", {})
            # what torwart received and did not send in the window (its stats file is
            # rewritten every second, so this window is only roughly the measured one)
            rx = lambda c: c.get("rx_inside_packets", 0) + c.get("rx_outside_packets", 0)
            tx = lambda c: c.get("tx_inside_packets", 0) + c.get("tx_outside_packets", 0)
            drops = str((rx(cb) - rx(ca)) - (tx(cb) - tx(ca)))
            flows = str(sb.get("flows", ""))
        except (OSError, ValueError):
            pass
    vals = [run, n, cfg, f"{fwd:.0f}", f"{off:.0f}", f"{100 * (off - fwd) / off if off else 0:.1f}",
            f"{box['busy']:.1f}", f"{box['si']:.1f}", f"{us:.3f}", f"{per_s:.0f}", f"{c0['busy']:.1f}",
            f"{gen:.1f}", f"{c0['busy'] - gen:.1f}", f"{tw:.1f}", f"{napi:.1f}",
            f"{box['steal'] + c0['steal']:.1f}", f"{p50:.3f}", f"{p99:.3f}", f"{ploss:.1f}", drops, flows,
            f"{100.0 * (b['foreign'] - a['foreign']) / HZ / dt:.1f}", rate, f"{tw_user:.1f}"]
    print("\t".join(map(str, vals)))


# ------------------------------------------------------------------ report
KERNEL = ["plain", "ipt-new", "ipt-est", "nft-new", "nft-est"]
LABEL = {
    "plain": "kernel: plain routing (no netfilter)",
    "ipt-new": "kernel: iptables per-member chains, one-way (NEW)",
    "ipt-est": "kernel: iptables per-member chains, replied (EST)",
    "nft-new": "kernel: nftables maps, one-way (NEW)",
    "nft-est": "kernel: nftables maps, replied (EST)",
    "tw-xdp-sleep": "torwart AF_XDP, idle=sleep",
    "tw-xdp-busy": "torwart AF_XDP, idle=busy",
    "tw-xdpg-sleep": "torwart AF_XDP, generic XDP, idle=sleep",
    "tw-xdpg-busy": "torwart AF_XDP, generic XDP, idle=busy",
    "tw-afp-sleep": "torwart AF_PACKET, idle=sleep",
    "tw-afp-busy": "torwart AF_PACKET, idle=busy",
    "tw-afpn-sleep": "torwart AF_PACKET without admission, idle=sleep",
    "tw-afpn-busy": "torwart AF_PACKET without admission, idle=busy",
    "tw-null-sleep": "torwart AF_XDP, engine bypassed (floor), idle=sleep",
    "tw-null-busy": "torwart AF_XDP, engine bypassed (floor), idle=busy",
}
# Each side's floor: what forwarding costs with no policy at all.
FLOOR = {"plain": ["ipt-new", "ipt-est", "nft-new", "nft-est"],
         "tw-null-sleep": ["tw-xdp-sleep"], "tw-null-busy": ["tw-xdp-busy"]}


def base(c):
    return c.split("@")[0]


def label(c):
    b = LABEL.get(base(c), base(c))
    return b + (f", offered {int(c.split('@')[1]) / 1000:.0f} kpps" if "@" in c else "")


def order(cs):
    names = list(LABEL)
    return sorted(cs, key=lambda c: (names.index(base(c)) if base(c) in names else 99, c))


def read_tsv(path):
    with open(path) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        return [dict(zip(hdr, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def med(v, fmt="{:.0f}", scale=1.0):
    v = sorted(x * scale for x in v if x == x)
    if not v:
        return "-"
    m = statistics.median(v)
    if len(v) == 1:
        return fmt.format(m)
    return f"{fmt.format(m)} [{fmt.format(v[0])}-{fmt.format(v[-1])}]"


def report(resdir, png=None):
    rows = read_tsv(os.path.join(resdir, "results.tsv"))
    loads = read_tsv(os.path.join(resdir, "loads.tsv")) if os.path.exists(os.path.join(resdir, "loads.tsv")) else []
    ns = sorted({int(r["N"]) for r in rows})
    runs = sorted({r["run"] for r in rows})
    out = []
    w = out.append
    for n in ns:
        rs = [r for r in rows if int(r["N"]) == n]
        cfgs = order({r["config"] for r in rs})
        g = {c: [r for r in rs if r["config"] == c] for c in cfgs}
        col = lambda c, k: [float(r[k]) for r in g[c] if r[k] not in ("", "nan")]
        w(f"### N = {n} members, {len(runs)} run(s): median [min-max]\n")
        w("| configuration | forwarded kpps | loss % | box core busy % | box CPU µs/pkt (= CPU-s per Mpps) "
          "| kpps per box CPU-second | CPU0 busy % (gen + sink) | probe RTT p50 / p99 ms | probe loss % |")
        w("|---|---|---|---|---|---|---|---|---|")
        for c in cfgs:
            w(f"| {label(c)} | {med(col(c, 'fwd_pps'), scale=1e-3)} | {med(col(c, 'loss_pct'), '{:.1f}')} "
              f"| {med(col(c, 'box_busy_pct'))} | {med(col(c, 'box_us_per_pkt'), '{:.2f}')} "
              f"| {med(col(c, 'pps_per_box_cpu_s'), scale=1e-3)} | {med(col(c, 'cpu0_busy_pct'))} "
              f"| {med(col(c, 'probe_p50_ms'), '{:.2f}')} / {med(col(c, 'probe_p99_ms'), '{:.2f}')} "
              f"| {med(col(c, 'probe_loss_pct'), '{:.1f}')} |")
        # ratios within each run, then median over runs
        w("")
        w("Ratios measured within each run (torwart / kernel), median [min-max] over runs:\n")
        w("| torwart config | vs | packets per box CPU-second (x) | box µs per packet (x, lower is better) "
          "| forwarded pps (x) |")
        w("|---|---|---|---|---|")
        for t in [c for c in cfgs if c.startswith("tw-")]:
            for k in [c for c in cfgs if c in KERNEL]:  # kernel at the generator's full rate
                pr, cr, fr = [], [], []
                for run in runs:
                    a = [r for r in g[t] if r["run"] == run]
                    b = [r for r in g[k] if r["run"] == run]
                    if a and b:
                        fa, fb = float(a[0]["pps_per_box_cpu_s"]), float(b[0]["pps_per_box_cpu_s"])
                        pr.append(fa / fb)
                        cr.append(float(a[0]["box_us_per_pkt"]) / float(b[0]["box_us_per_pkt"]))
                        fr.append(float(a[0]["fwd_pps"]) / float(b[0]["fwd_pps"]))
                w(f"| {t} | {k} | {med(pr, '{:.2f}')} | {med(cr, '{:.2f}')} | {med(fr, '{:.2f}')} |")
        w("")
        above = above_floor(g, runs)
        if above:
            w("Work above each side's floor, µs of box CPU per packet (the configuration's minus its floor's, "
              "within each run; kernel floor: plain routing; torwart's: the same backend with the engine "
              "bypassed), median [min-max] over runs; last column: how many times the kernel's work above "
              "its floor torwart's is:\n")
            w("| configuration | floor | µs/pkt | floor µs/pkt | work above the floor µs/pkt | "
              + " | ".join(f"{k} work / this" for k in above["kernel"]) + " |")
            w("|---|---|---|---|---|" + "---|" * len(above["kernel"]))
            for c, fl, tot, fls, work in above["rows"]:
                ratios = [med(above["ratio"].get((c, k), []), '{:.1f}') for k in above["kernel"]] \
                    if c.startswith("tw-") else ["-"] * len(above["kernel"])
                w(f"| {c} | {fl} | {med(tot, '{:.2f}')} | {med(fls, '{:.2f}')} | {med(work, '{:.2f}')} | "
                  + " | ".join(ratios) + " |")
            w("")
        w("CPU split (% of one core, median): box core = CPU1; CPU0 = generator process + sink "
          "(the sinks' ingress drop, RPS'd to CPU0) + the rest of what the generator's sends trigger there.\n")
        w("| configuration | box core busy | of which softirq | torwart process (of which user) | veth NAPI threads "
          "| generator process | CPU0 other (sink etc.) | steal | others' processes (machine) |")
        w("|---|---|---|---|---|---|---|---|---|")
        for c in cfgs:
            w(f"| {c} | {med(col(c, 'box_busy_pct'))} | {med(col(c, 'box_softirq_pct'))} "
              f"| {med(col(c, 'torwart_proc_pct')) + ' (' + med(col(c, 'torwart_user_pct')) + ')' if c.startswith('tw-') else '-'} "
              f"| {med(col(c, 'napi_pct')) if c.startswith(('tw-xdp', 'tw-null', 'tw-afp-')) else '-'} | {med(col(c, 'gen_proc_pct'))} "
              f"| {med(col(c, 'sink_etc_pct'))} | {med(col(c, 'steal_pct'))} | {med(col(c, 'foreign_pct'))} |")
        w("")
        ls = [l for l in loads if int(l["N"]) == n]
        if ls:
            w("Policy load times, median [min-max]:\n")
            w("| what | seconds | size |")
            w("|---|---|---|")
            for what in dict.fromkeys(l["what"] for l in ls):
                v = [float(l["seconds"]) for l in ls if l["what"] == what]
                size = next(l["size"] for l in ls if l["what"] == what)
                w(f"| {what} | {med(v, '{:.3f}')} | {size} |")
            w("")
    text = "\n".join(out)
    print(text)
    if png:
        plot(rows, png)


def above_floor(g, runs):
    """Per configuration with its floor in the run: (config, floor, totals, floors, work above) and,
    per (torwart config, kernel config), the ratio of the kernel's work above its floor to torwart's."""
    def us(c, run):
        r = [x for x in g.get(c, []) if x["run"] == run and x["box_us_per_pkt"] not in ("", "nan")]
        return float(r[0]["box_us_per_pkt"]) if r else None
    rows, work_of = [], {}
    for fl, cs in FLOOR.items():
        for c in cs:
            if c not in g or fl not in g:
                continue
            tot, fls, work = [], [], []
            for run in runs:
                t, f = us(c, run), us(fl, run)
                if t is not None and f is not None:
                    tot.append(t); fls.append(f); work.append(t - f)
                    work_of[(c, run)] = t - f
            rows.append((c, fl, tot, fls, work))
    kernel = [k for k in FLOOR["plain"] if k in g and "plain" in g]
    ratio = {}
    for c, *_ in rows:
        if c.startswith("tw-"):
            for k in kernel:
                ratio[(c, k)] = [work_of[(k, r)] / work_of[(c, r)] for r in runs
                                 if (k, r) in work_of and (c, r) in work_of
                                 and work_of[(c, r)] > 0 and work_of[(k, r)] > 0]
    return {"rows": rows, "kernel": kernel, "ratio": ratio} if rows else None


def plot(rows, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib missing: no {png}; pip install matplotlib)", file=sys.stderr)
        return
    n = max(int(r["N"]) for r in rows)
    rs = [r for r in rows if int(r["N"]) == n]
    cfgs = order({r["config"] for r in rs})
    fig, axes = plt.subplots(1, 3, figsize=(15, 5.2))
    specs = [("pps_per_box_cpu_s", 1e-3, "kpps per box CPU-second (higher is better)"),
             ("fwd_pps", 1e-3, "forwarded kpps at the sink"),
             ("probe_p99_ms", 1.0, "probe RTT p99 under load, ms (log)")]
    colors = ["#888888" if c == "plain" else "#c0504d" if c.startswith("ipt") else "#e8a33d" if c.startswith("nft")
              else "#4f81bd" if "xdp" in c else "#5aa36f" for c in cfgs]
    for ax, (k, sc, title) in zip(axes, specs):
        meds, lo, hi = [], [], []
        for c in cfgs:
            v = sorted(float(r[k]) * sc for r in rs if r["config"] == c and r[k] not in ("", "nan"))
            m = statistics.median(v) if v else 0
            meds.append(m)
            lo.append(m - (v[0] if v else 0))
            hi.append((v[-1] if v else 0) - m)
        y = range(len(cfgs))
        ax.barh(list(y), meds, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(list(y))
        ax.set_yticklabels(cfgs if ax is not axes[0] else cfgs)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if k == "probe_p99_ms":
            ax.set_xscale("log")
        ax.grid(axis="x", alpha=0.3)
    runs = len({r["run"] for r in rs})
    fig.suptitle(f"torwart vs the Linux kernel on the same veth topology and traffic: N={n} members, "
                 f"200k one-way UDP flows, box on one core; median and min-max of {runs} run(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "snap":
        snap(sys.argv[2:])
    elif cmd == "row":
        row(*sys.argv[2:15])
    elif cmd == "foreign":  # foreign CPU over the next second, in % of one core
        r = os.environ.get("SBS_ROOT", "1")
        a = foreign_ticks(r)
        time.sleep(1)
        print(f"{100.0 * (foreign_ticks(r) - a) / HZ:.0f}")
    elif cmd == "header":
        print("\t".join(FIELDS))
    elif cmd == "report":
        report(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    else:
        sys.exit(__doc__)
