#!/usr/bin/env python3
"""Helpers of scripts/sidebyside-shaping (per-member shaping: kernel HTB vs torwart).

  shaping.py layout                      the member layout as shell variables (eval)
  shaping.py members                     torwart's member database (JSON import format) on stdout
  shaping.py htb DEV DIR UPLINK_MBIT LEAF   tc -batch lines: HTB on DEV, one class per member
                                         (DIR up|down picks the plan's rates; LEAF pfifo = default
                                         leaf, pfifoN = pfifo limit N, or a qdisc name)
  shaping.py nftcount DEV up|down        nft -f text: per-member byte counters at DEV's ingress
  shaping.py counters                    (stdin: `nft -j list table netdev sbsc`) -> JSON {member: [pkts, bytes]}
  shaping.py acc CFG RUN DIR SECS A B    accuracy rows (stdout, TSV) from two counter snapshots
  shaping.py sat CFG RUN ...             one saturation row (see sat())
  shaping.py report RESDIR [PNG]         tables (median [min-max] over runs, ratios per run) and plot

Member layout (the kernel baseline's address plan, genrules.py): member m has the devices
10.(128+m/256).(m%256).10/.11, public address 198.18.0.0+1024+m, mark m+16, HTB class 1:hex(m+16).
  accuracy members 0..9  test accounts: 2/4, 5/10, 10/20 Mbit/s up/down (rate = ceil)
  heavy members 10..10+NH-1, light member 10+NH: plan "standard" (rate 10/20, ceil 100/200 Mbit/s
  up/down, weight 1)
"""
import json
import os
import re
import statistics
import sys

NH = int(os.environ.get("NH", "16"))
QUIET_PCT = float(os.environ.get("QUIET_PCT", "25"))   # report: windows with less foreign CPU count as quiet
# (name, up_rate, up_ceil, down_rate, down_ceil, burst_bytes) in kbit/s
PLANS = {
    1: ("test 2/4", 2000, 2000, 4000, 4000, 16000),
    2: ("test 5/10", 5000, 5000, 10000, 10000, 16000),
    3: ("test 10/20", 10000, 10000, 20000, 20000, 16000),
    4: ("standard", 10000, 100000, 20000, 200000, 64000),
}
ACC = [1, 1, 1, 1, 2, 2, 2, 3, 3, 3]          # plan of accuracy member m
A = len(ACC)
HEAVY = list(range(A, A + NH))
LIGHT = A + NH
N = LIGHT + 1


def plan_of(m):
    return ACC[m] if m < A else 4


def dev_ip(m, d=0):
    return "10.%d.%d.%d" % (128 + (m >> 8), m & 255, 10 + d)


def pub(m):
    a = (198 << 24) | (18 << 16) | (1024 + m)
    return ".".join(str(a >> s & 255) for s in (24, 16, 8, 0))


def layout():
    print(f"N={N} A={A} NH={NH} LIGHT={LIGHT} HEAVY='{' '.join(map(str, HEAVY))}' "
          f"ACC_MEMBERS='{' '.join(map(str, range(A)))}'")


def members():
    plans = [{"id": i, "name": p[0], "up_rate_kbit": p[1], "up_ceil_kbit": p[2], "down_rate_kbit": p[3],
              "down_ceil_kbit": p[4], "burst_bytes": p[5], "weight": 1} for i, p in PLANS.items()]
    ms, addrs, pubs = [], [], []
    for m in range(N):
        ms.append({"id": m, "name": "member-%d" % m, "status": "test" if m < A else "active", "plan_id": plan_of(m)})
        for d in range(2):
            addrs.append({"id": len(addrs) + 1, "member_id": m, "network": dev_ip(m, d) + "/32", "device": "dev%d" % d})
        pubs.append({"id": m + 1, "member_id": m, "address": pub(m)})
    doc = {"plans": plans,
           "networks": [{"id": 1, "prefix": "10.128.0.0/9", "kind": "internal"},
                        {"id": 2, "prefix": "10.0.0.1/32", "kind": "box"},
                        {"id": 3, "prefix": "198.18.0.1/32", "kind": "box"}],
           "members": ms, "member_addresses": addrs, "public_addresses": pubs, "port_forwards": [],
           "ipv6_openings": [], "global_blocks": []}
    json.dump(doc, sys.stdout, separators=(",", ":"))


def htb(dev, direction, uplink_mbit, leaf):
    """HTB as the original box (and kbase's genrules.py): one class per member under one
    parent whose rate = ceil = the uplink; classified by the connection's mark with the same
    classic-BPF filter as genrules.py (classid = 1:skb->mark, cls_fw semantics)."""
    up = direction == "up"
    L = [f"qdisc add dev {dev} root handle 1: htb default 2",
         f"class add dev {dev} parent 1: classid 1:1 htb rate {uplink_mbit}mbit ceil {uplink_mbit}mbit quantum 60000",
         f"class add dev {dev} parent 1:1 classid 1:2 htb rate 1mbit ceil {uplink_mbit}mbit quantum 1514"]
    for m in range(N):
        _, ur, uc, dr, dc, burst = PLANS[plan_of(m)]
        rate, ceil = (ur, uc) if up else (dr, dc)
        cls = "%x" % (m + 16)
        L.append(f"class add dev {dev} parent 1:1 classid 1:{cls} htb rate {rate}kbit ceil {ceil}kbit "
                 f"burst {burst} cburst {burst} quantum 1514")
        if leaf != "pfifo":  # "pfifoN": a short tail-drop FIFO of N packets; or another qdisc's name
            q = f"pfifo limit {leaf[5:]}" if leaf.startswith("pfifo") else leaf
            L.append(f"qdisc add dev {dev} parent 1:{cls} handle {m + 0x100:x}: {q}")
    L.append(f'filter add dev {dev} parent 1: prio 1 protocol ip bpf bytecode '
             f'"5,32 0 0 4294963220,21 2 0 0,68 0 0 65536,22 0 0 0,6 0 0 0" classid 1:2')
    print("\n".join(L))


def nftcount(dev, direction):
    """Counters at the receiving end (kb-out for upload, by the member's public source address;
    kb-in for download, by the member's device address): neutral, the same for both boxes."""
    rules = []
    for m in range(N):
        if direction == "up":
            rules.append(f"    ip saddr {pub(m)} counter comment \"m{m}\"")
        else:
            rules.append(f"    ip daddr {{ {dev_ip(m, 0)}, {dev_ip(m, 1)} }} counter comment \"m{m}\"")
    print("table netdev sbsc {\n  chain c { type filter hook ingress device \"%s\" priority 0; policy accept;\n%s\n  }\n}"
          % (dev, "\n".join(rules)))


def counters():
    doc = json.load(sys.stdin)
    out = {}
    for it in doc.get("nftables", []):
        r = it.get("rule")
        if not r:
            continue
        m = int(r.get("comment", "m-1")[1:])
        for e in r.get("expr", []):
            if "counter" in e:
                out[m] = [e["counter"]["packets"], e["counter"]["bytes"]]
    print(json.dumps(out))


def wire_bps(a, b, m, dt):
    """Ethernet frame bits/s of member m (IP bytes at ingress + 14 bytes of header per packet:
    what HTB on veth and torwart's shaper both count)."""
    pa, ba = a.get(str(m), [0, 0])
    pb, bb = b.get(str(m), [0, 0])
    return ((bb - ba) + 14 * (pb - pa)) * 8 / dt


ACC_FIELDS = ["run", "config", "dir", "member", "plan", "plan_kbit", "wire_kbit", "error_pct", "iperf_goodput_kbit"]


def acc(cfg, run, direction, a, b, dt, iperf_dir):
    a, b, dt = json.loads(open(a).read()), json.loads(open(b).read()), float(dt)
    for m in range(A):
        p = PLANS[plan_of(m)]
        plan = p[2] if direction == "up" else p[4]
        w = wire_bps(a, b, m, dt) / 1000
        gp = ""
        try:
            j = json.load(open(os.path.join(iperf_dir, f"acc-{direction}-m{m}.json")))
            gp = "%.0f" % (j["end"]["sum_received"]["bits_per_second"] / 1000)
        except (OSError, ValueError, KeyError):
            pass
        print("\t".join(map(str, [run, cfg, direction, m, p[0], plan, f"{w:.1f}", f"{100 * (w - plan) / plan:.2f}", gp])))


def rtts(path):
    v = []
    try:
        for line in open(path):
            mm = re.search(r"time=([\d.]+) ms", line)
            if mm:
                v.append(float(mm.group(1)))
    except OSError:
        pass
    return v


def pct(v, q):
    v = sorted(v)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


SAT_FIELDS = ["run", "config", "uplink_mbit", "agg_mbit", "agg_pct_of_uplink", "jain", "heavy_min_mbit",
              "heavy_max_mbit", "light_idle_p50", "light_idle_p99", "light_p50", "light_p99", "light_added_p50",
              "light_added_p99", "light_loss_pct", "heavyprobe_idle_p50", "heavyprobe_idle_p99", "heavyprobe_p50",
              "heavyprobe_p99", "heavyprobe_added_p50", "heavyprobe_added_p99", "heavyprobe_loss_pct", "box_busy_pct",
              "box_softirq_pct", "box_cpu_s_per_gbit", "cpu0_busy_pct", "foreign_pct", "shaper_drops", "note"]


def sat(cfg, run, uplink, a, b, dt, cpua, cpub, resdir, expected, note=""):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from sbs import cpu_delta
    a, b, dt = json.loads(open(a).read()), json.loads(open(b).read()), float(dt)
    ca, cb = json.loads(cpua), json.loads(cpub)
    hv = [wire_bps(a, b, m, dt) / 1e6 for m in HEAVY]
    agg = sum(wire_bps(a, b, m, dt) for m in range(N)) / 1e6
    jain = sum(hv) ** 2 / (len(hv) * sum(x * x for x in hv)) if any(hv) else float("nan")
    box, c0 = cpu_delta(ca, cb, 1), cpu_delta(ca, cb, 0)
    wall = cb["t"] - ca["t"]
    foreign = 100.0 * (cb["foreign"] - ca["foreign"]) / os.sysconf("SC_CLK_TCK") / wall
    vals = [run, cfg, uplink, f"{agg:.1f}", f"{100 * agg / float(uplink):.1f}", f"{jain:.4f}", f"{min(hv):.2f}",
            f"{max(hv):.2f}"]
    for who in ("light", "heavyprobe"):
        idle = rtts(os.path.join(resdir, f"ping-{who}-idle-{cfg}-{run}.txt"))
        load = rtts(os.path.join(resdir, f"ping-{who}-{cfg}-{run}.txt"))
        i50, i99, l50, l99 = pct(idle, .5), pct(idle, .99), pct(load, .5), pct(load, .99)
        loss = 100.0 * max(0, int(expected) - len(load)) / int(expected)
        vals += [f"{i50:.3f}", f"{i99:.3f}", f"{l50:.3f}", f"{l99:.3f}", f"{l50 - i50:.3f}", f"{l99 - i99:.3f}",
                 f"{loss:.1f}"]
    gbit = agg / 1000
    vals += [f"{box['busy']:.1f}", f"{box['si']:.1f}",
             f"{box['busy'] / 100 / gbit:.3f}" if gbit > 0 else "nan", f"{c0['busy']:.1f}", f"{foreign:.1f}",
             note.split("|")[0] if note else "", note.split("|")[1] if "|" in note else ""]
    print("\t".join(map(str, vals)))


def drops_note(cfg, resdir, run):
    """Queue drops in the window: kernel from `tc -s class show` (a/b), torwart from its stats file."""
    if cfg.startswith("tw"):
        try:
            sa = json.load(open(os.path.join(resdir, f"tw-sat-{cfg}-{run}.a.json")))
            sb = json.load(open(os.path.join(resdir, f"tw-sat-{cfg}-{run}.b.json")))
        except (OSError, ValueError):
            return ""

        def d(s):
            t = 0
            for m in s.get("shaping", []):
                u = m.get("up") or {}
                t += sum(u.get("drops", {}).values())
            return t
        qd = [((m.get("up") or {}).get("queue_delay_us", 0)) for m in sb.get("shaping", []) if m["member_id"] in HEAVY]
        return f"{d(sb) - d(sa)}|queue delay (up) of heavy members at the end: {min(qd)}-{max(qd)} us" if qd else f"{d(sb) - d(sa)}|"

    def parse(path):
        tot, back = 0, []
        cls = None
        try:
            for line in open(path):
                mm = re.match(r"class htb (\S+)", line)
                if mm:
                    cls = mm.group(1)
                mm = re.search(r"dropped (\d+)", line)
                if mm and cls not in (None, "1:1"):
                    tot += int(mm.group(1))
                mm = re.search(r"backlog (\d+)b (\d+)p", line)
                if mm and cls not in (None, "1:1", "1:2"):
                    back.append(int(mm.group(2)))
        except OSError:
            pass
        return tot, back
    ta, _ = parse(os.path.join(resdir, f"tc-sat-{cfg}-{run}.a.txt"))
    tb, back = parse(os.path.join(resdir, f"tc-sat-{cfg}-{run}.b.txt"))
    return f"{tb - ta}|class backlog at the end: {min(back) if back else 0}-{max(back) if back else 0} packets"


# ------------------------------------------------------------------ report
LABEL = {"htb": "kernel HTB, pfifo leaves (the original box)",
         "htb-short": "kernel HTB, short pfifo leaves (kernel's best effort here)",
         "htb-fqc": "kernel HTB, fq_codel leaves",
         "tw": "torwart AF_XDP, shaping on"}
for _c in ("25us", "50us", "100us", "200us", "0s"):
    LABEL[f"tw@{_c}"] = f"torwart AF_XDP, shaping on, coalesce {_c}"


def read_tsv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        hdr = f.readline().rstrip("\n").split("\t")
        return [dict(zip(hdr, line.rstrip("\n").split("\t"))) for line in f if line.strip()]


def med(v, fmt="{:.1f}"):
    v = sorted(x for x in v if x == x)
    if not v:
        return "-"
    m = statistics.median(v)
    return fmt.format(m) if len(v) == 1 else f"{fmt.format(m)} [{fmt.format(v[0])} to {fmt.format(v[-1])}]"


def order(cs):
    return sorted(cs, key=lambda c: list(LABEL).index(c) if c in LABEL else 99)


def report(resdir, png=None):
    acc_rows = read_tsv(os.path.join(resdir, "accuracy.tsv"))
    sat_rows = read_tsv(os.path.join(resdir, "saturation.tsv"))
    runs = sorted({r["run"] for r in acc_rows + sat_rows})
    cfgs = order({r["config"] for r in acc_rows + sat_rows})
    out = []
    w = out.append
    cc = "bbr (not recorded: runs before CC= existed)"
    try:
        mm = re.search(r"CC=(\S+)", open(os.path.join(resdir, "meta.txt")).read())
        cc = mm.group(1) if mm else cc
    except OSError:
        pass
    w(f"Members' TCP congestion control: {cc}.\n")
    w(f"### (a) Rate accuracy: {A} test accounts at once, TCP (iperf3, one per member), {len(runs)} run(s)\n")
    w("Measured rate = Ethernet-frame bits/s of the member at the receiving side (IP bytes counted by nft at "
      "the sink's ingress + 14 bytes per packet: what both shapers count), over the window; error = measured / "
      "plan − 1. Median [min to max] over the members of the plan and the runs.\n")
    w("| plan | direction | " + " | ".join(f"{c}: Mbit/s" for c in cfgs) + " | " +
      " | ".join(f"{c}: error %" for c in cfgs) + " |")
    w("|---|---|" + "---|" * (2 * len(cfgs)))
    for d in ("up", "down"):
        for p in sorted({r["plan"] for r in acc_rows}, key=lambda s: int(s.split()[1].split("/")[0])):
            rs = [r for r in acc_rows if r["dir"] == d and r["plan"] == p]
            if not rs:
                continue
            plan_mbit = float(rs[0]["plan_kbit"]) / 1000
            cells = [med([float(r["wire_kbit"]) / 1000 for r in rs if r["config"] == c], "{:.2f}") for c in cfgs]
            errs = [med([float(r["error_pct"]) for r in rs if r["config"] == c], "{:+.1f}") for c in cfgs]
            w(f"| {p} ({plan_mbit:g} Mbit/s) | {d} | " + " | ".join(cells) + " | " + " | ".join(errs) + " |")
    w("")
    w("Largest |error| of any member in any run: " + ", ".join(
        f"{c} {max((abs(float(r['error_pct'])) for r in acc_rows if r['config'] == c), default=float('nan')):.1f} %"
        for c in cfgs) + ".\n")
    if sat_rows:
        up = sat_rows[0]["uplink_mbit"]
        w(f"### (b) Saturated uplink: {NH} heavy members (iperf3 -P 2 upload each, plan 10 Mbit/s rate, 100 Mbit/s "
          f"ceil) into a {up} Mbit/s uplink; one light member pings; {len(runs)} run(s)\n")
        w("RTT in ms (ping -i 0.01 to 198.19.1.1 through the box); added = under load − idle (measured just before the "
          "load, same configuration). Light member: its own class/queue, nothing else of its own queued. Heavy "
          "member's probe: ping from the second device of a heavy member, i.e. behind its own bulk upload. "
          "Box CPU: busy share of CPU1 (every tick: softirq, torwart, NAPI threads). Median [min to max].\n")
        cols = [("aggregate Mbit/s", "agg_mbit", "{:.0f}"), ("% of uplink", "agg_pct_of_uplink", "{:.0f}"),
                ("Jain (heavy)", "jain", "{:.3f}"),
                ("light RTT p50 / p99 idle", None, None),
                ("light RTT p50 / p99 loaded", None, None), ("light added p99", "light_added_p99", "{:.2f}"),
                ("heavy's own RTT p50 / p99 loaded", None, None), ("heavy's added p99", "heavyprobe_added_p99", "{:.1f}"),
                ("heavy probe loss %", "heavyprobe_loss_pct", "{:.1f}"),
                ("box CPU1 busy %", "box_busy_pct", "{:.0f}"), ("box CPU-s per Gbit", "box_cpu_s_per_gbit", "{:.2f}"),
                ("box CPU-s per Gbit, quiet windows only (n)", "QUIET", None),
                ("queue drops", "shaper_drops", "{:.0f}"), ("others' CPU %", "foreign_pct", "{:.0f}")]
        w("| configuration | " + " | ".join(c[0] for c in cols) + " |")
        w("|---|" + "---|" * len(cols))
        for c in cfgs:
            rs = [r for r in sat_rows if r["config"] == c]
            if not rs:
                continue
            col = lambda k: [float(r[k]) for r in rs if r.get(k, "") not in ("", "nan")]
            cells = []
            for name, k, f in cols:
                if k == "QUIET":
                    q = [float(r["box_cpu_s_per_gbit"]) for r in rs if float(r["foreign_pct"]) <= QUIET_PCT]
                    cells.append(f"{med(q, '{:.2f}')} ({len(q)})")
                elif k:
                    cells.append(med(col(k), f))
                elif "light" in name and "idle" in name:
                    cells.append(f"{med(col('light_idle_p50'), '{:.2f}')} / {med(col('light_idle_p99'), '{:.2f}')}")
                elif "light" in name:
                    cells.append(f"{med(col('light_p50'), '{:.2f}')} / {med(col('light_p99'), '{:.2f}')}")
                else:
                    cells.append(f"{med(col('heavyprobe_p50'), '{:.1f}')} / {med(col('heavyprobe_p99'), '{:.1f}')}")
            w(f"| {LABEL.get(c, c)} | " + " | ".join(cells) + " |")
        w("")
        w(f"Box CPU counts every busy tick of CPU1, so other people's processes on it (a build; last column, "
          f"% of one core over the whole machine) inflate it: the quiet-windows column keeps only windows where "
          f"others used at most {QUIET_PCT:.0f} % of a core.\n")
        w("Ratios within each run (torwart / kernel), median [min to max] over runs:\n")
        w("| torwart | vs | aggregate throughput (x) | throughput per box CPU-second (x) | light member's p99 RTT (x) "
          "| light member's p99, torwart minus kernel (ms) | heavy member's own p99 RTT (x) |")
        w("|---|---|---|---|---|---|---|")
        for tc in [c for c in cfgs if c.startswith("tw")]:
            for k in [c for c in cfgs if not c.startswith("tw")]:
                th, eff, lp, ld, hp = [], [], [], [], []
                for run in runs:
                    t = [r for r in sat_rows if r["config"] == tc and r["run"] == run]
                    h = [r for r in sat_rows if r["config"] == k and r["run"] == run]
                    if not (t and h):
                        continue
                    t, h = t[0], h[0]
                    th.append(float(t["agg_mbit"]) / float(h["agg_mbit"]))
                    eff.append(float(h["box_cpu_s_per_gbit"]) / float(t["box_cpu_s_per_gbit"]))
                    lp.append(float(t["light_p99"]) / float(h["light_p99"]))
                    ld.append(float(t["light_p99"]) - float(h["light_p99"]))
                    hp.append(float(t["heavyprobe_p99"]) / float(h["heavyprobe_p99"]))
                w(f"| {tc} | {k} | {med(th, '{:.2f}')} | {med(eff, '{:.2f}')} | {med(lp, '{:.2f}')} "
                  f"| {med(ld, '{:+.2f}')} | {med(hp, '{:.3f}')} |")
        w("")
        notes = [f"{r['config']} run {r['run']}: {r['note']}" for r in sat_rows if r.get("note")]
        if notes:
            w("Queue state at the end of the window: " + "; ".join(notes) + ".\n")
    text = "\n".join(out)
    print(text)
    if png:
        plot(acc_rows, sat_rows, cfgs, png)


def plot(acc_rows, sat_rows, cfgs, png):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"(matplotlib missing: no {png})", file=sys.stderr)
        return
    colors = {"htb": "#c0504d", "htb-short": "#e8a33d", "htb-fqc": "#e8a33d", "tw": "#4f81bd"}
    colors.update({c: "#4f81bd" for c in cfgs if c.startswith("tw@")})
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.8))
    # 1: accuracy error per plan and direction
    ax = axes[0]
    keys = []
    for d in ("up", "down"):
        for p in sorted({r["plan"] for r in acc_rows}, key=lambda s: int(s.split()[1].split("/")[0])):
            keys.append((d, p))
    width = 0.8 / max(1, len(cfgs))
    for i, c in enumerate(cfgs):
        meds, lo, hi = [], [], []
        for d, p in keys:
            v = sorted(float(r["error_pct"]) for r in acc_rows if r["config"] == c and r["dir"] == d and r["plan"] == p)
            m = statistics.median(v) if v else 0
            meds.append(m)
            lo.append(m - (v[0] if v else 0))
            hi.append((v[-1] if v else 0) - m)
        xs = [k + (i - (len(cfgs) - 1) / 2) * width for k in range(len(keys))]
        ax.bar(xs, meds, width, yerr=[lo, hi], color=colors.get(c, "#888"), label=c, capsize=2)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([f"{p.split()[1]}\n{d}" for d, p in keys], fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    for y in (-2, 2):
        ax.axhline(y, color="k", lw=0.4, ls=":")
    ax.set_title("(a) rate error vs plan, % (±2 % dotted)", fontsize=10)
    ax.legend(fontsize=8)
    # 2-4: saturation
    specs = [("heavyprobe_p99", "light_p99", "(b) RTT p99 under load, ms (log):\nheavy member's own / light member"),
             ("agg_mbit", None, "(b) aggregate Mbit/s (dashed: uplink)"),
             ("box_cpu_s_per_gbit", None, f"(b) box CPU-seconds per Gbit (lower is better);\nquiet windows only (others ≤ {QUIET_PCT:.0f} % of a core)")]
    for ax, (k, k2, title) in zip(axes[1:], specs):
        ys = []
        for i, c in enumerate(cfgs):
            for j, kk in enumerate([k] + ([k2] if k2 else [])):
                v = sorted(float(r[kk]) for r in sat_rows if r["config"] == c and r[kk] not in ("", "nan")
                           and (kk != "box_cpu_s_per_gbit" or float(r["foreign_pct"]) <= QUIET_PCT))
                if not v:
                    continue
                m = statistics.median(v)
                y = len(ys)
                ys.append(f"{c}" + ("" if not k2 else (" heavy" if j == 0 else " light")))
                ax.barh([y], [m], xerr=[[m - v[0]], [v[-1] - m]], color=colors.get(c, "#888"),
                        alpha=1.0 if j == 0 else 0.55, capsize=3)
        ax.set_yticks(range(len(ys)))
        ax.set_yticklabels(ys, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        if k == "heavyprobe_p99":
            ax.set_xscale("log")
        if k == "agg_mbit" and sat_rows:
            ax.axvline(float(sat_rows[0]["uplink_mbit"]), color="k", ls="--", lw=0.8)
        ax.grid(axis="x", alpha=0.3)
    runs = len({r["run"] for r in acc_rows + sat_rows})
    fig.suptitle(f"Per-member shaping, kernel HTB (one class per member) vs torwart, same veth topology and traffic, "
                 f"box on one core; median and min-max of {runs} run(s)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    print(f"wrote {png}", file=sys.stderr)


if __name__ == "__main__":
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    args = sys.argv[2:]
    if cmd == "layout":
        layout()
    elif cmd == "members":
        members()
    elif cmd == "htb":
        htb(*args)
    elif cmd == "nftcount":
        nftcount(*args)
    elif cmd == "counters":
        counters()
    elif cmd == "acc-header":
        print("\t".join(ACC_FIELDS))
    elif cmd == "sat-header":
        print("\t".join(SAT_FIELDS))
    elif cmd == "acc":
        acc(*args)
    elif cmd == "sat":
        cfg, run, uplink, a, b, dt, cpua, cpub, resdir, expected = args[:10]
        sat(cfg, run, uplink, a, b, dt, cpua, cpub, resdir, expected, drops_note(cfg, resdir, run))
    elif cmd == "report":
        report(args[0], args[1] if len(args) > 1 else None)
    else:
        sys.exit(__doc__)
