#!/usr/bin/env python3
"""Write torwart's member database (JSON import format, docs/members.md) for
the same N members the kernel baseline's rules describe
(/work/shared/kernel-baseline/genrules.py's address plan):

  member m (id m): devices 10.(128+m/256).(m%256).10 and .11 (/32 each,
  the kernel drops a member's unregistered addresses too), public address
  198.18.0.0+1024+m (whole port range), every 4th member forwards tcp 2222
  to device .10 port 22 (the kernel's DNAT rule). One plan (the shaper is
  not in the forwarding path yet, as the kernel runs here without HTB).
Networks: 10.128.0.0/9 internal (the members), the box's two link
addresses as `box`.

usage: members.py -N 5000 [-D 2] [--pf-every 4] > members.json
"""
import argparse
import json
import sys


def dotted(a):
    return ".".join(str(a >> s & 255) for s in (24, 16, 8, 0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-N", type=int, required=True)
    ap.add_argument("-D", type=int, default=2)
    ap.add_argument("--pf-every", type=int, default=4)
    a = ap.parse_args()
    pub_base = (198 << 24) | (18 << 16)
    members, addrs, pubs, fwds = [], [], [], []
    for m in range(a.N):
        members.append({"id": m, "name": "member-%d" % m, "status": "active", "plan_id": 1})
        for d in range(a.D):
            addrs.append({"id": len(addrs) + 1, "member_id": m,
                          "network": "10.%d.%d.%d/32" % (128 + (m >> 8), m & 255, 10 + d),
                          "device": "dev%d" % d})
        pubs.append({"id": m + 1, "member_id": m, "address": dotted(pub_base + 1024 + m)})
        if m % a.pf_every == 0:
            fwds.append({"id": len(fwds) + 1, "member_id": m, "protocol": "tcp", "public_port": 2222,
                         "internal_address": "10.%d.%d.10" % (128 + (m >> 8), m & 255), "internal_port": 22})
    doc = {
        "plans": [{"id": 1, "name": "standard", "down_rate_kbit": 50000, "down_ceil_kbit": 200000,
                   "up_rate_kbit": 20000, "up_ceil_kbit": 100000, "burst_bytes": 64000, "weight": 1}],
        "networks": [{"id": 1, "prefix": "10.128.0.0/9", "kind": "internal"},
                     {"id": 2, "prefix": "10.0.0.1/32", "kind": "box"},
                     {"id": 3, "prefix": "198.18.0.1/32", "kind": "box"}],
        "members": members,
        "member_addresses": addrs,
        "public_addresses": pubs,
        "port_forwards": fwds,
        "ipv6_openings": [],
        "global_blocks": [],
    }
    json.dump(doc, sys.stdout, separators=(",", ":"))


if __name__ == "__main__":
    main()
