#!/usr/bin/env python3
"""Writes the seeds of the `pcap` and `engine` fuzz targets from the golden
captures (tests/golden/*/*.pcap) and the frame seeds (fuzz/seeds/*).

The frame seeds themselves (fuzz/seeds/<name>, for `classify` and `views`)
are written by `cargo test -p wire write_fuzz_seeds -- --ignored`.

Run from anywhere: `python3 fuzz/gen-seeds.py`. Deterministic; rewrites
fuzz/seeds/pcap/ and fuzz/seeds/engine/ whole. The input formats are those
documented at the top of fuzz_targets/pcap.rs and fuzz_targets/engine.rs.
"""
import os
import struct

FUZZ = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(FUZZ)
SEEDS = os.path.join(FUZZ, "seeds")
GOLDEN = os.path.join(ROOT, "tests", "golden")


def read_pcap(path):
    """(link type, [(ts_ns, frame)]) of a classic pcap file."""
    b = open(path, "rb").read()
    magic = b[:4]
    e = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    nanos = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack(e + "I", b[20:24])[0]
    off, recs = 24, []
    while off + 16 <= len(b):
        s, f, incl, _orig = struct.unpack(e + "IIII", b[off : off + 16])
        off += 16
        recs.append((s * 10**9 + (f if nanos else f * 1000), b[off : off + incl]))
        off += incl
    return link, recs


def pcap(recs, link=1, big=False, nanos=True, snaplen=65535, strip=0):
    """A classic pcap file; `strip` bytes of Ethernet header are cut off each frame."""
    e = ">" if big else "<"
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, link)
    for ts, frame in recs:
        data = frame[strip:]
        frac = ts % 10**9 if nanos else (ts % 10**9) // 1000
        out += struct.pack(e + "IIII", ts // 10**9, frac, len(data), len(data)) + data
    return out


def sll(frame):
    """Ethernet -> Linux cooked (SLL) header: packet type, ARPHRD, addr len, addr(8), protocol."""
    return struct.pack(">HHH8s", 0, 1, 6, frame[6:12]) + frame[12:14] + frame[14:]


def sll2(frame):
    """Ethernet -> SLL2: protocol, reserved, ifindex, ARPHRD, packet type, addr len, addr(8)."""
    return frame[12:14] + struct.pack(">HIHBB8s", 0, 2, 1, 0, 6, frame[6:12]) + frame[14:]


def block(btype, body):
    pad = (-len(body)) % 4
    n = 12 + len(body) + pad
    return struct.pack("<II", btype, n) + body + b"\0" * pad + struct.pack("<I", n)


def option(code, value):
    return struct.pack("<HH", code, len(value)) + value + b"\0" * ((-len(value)) % 4)


def pcapng(recs):
    """Two sections: the first with an interface in microseconds (default
    resolution), enhanced packet blocks and a statistics block; the second
    with if_tsresol = 9 (ns) and if_tsoffset, a simple packet block, and an
    SLL interface."""
    shb = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1) + option(0, b""))
    idb_us = block(1, struct.pack("<HHI", 1, 0, 65535) + option(0, b""))
    out = shb + idb_us
    half = len(recs) // 2
    for ts, frame in recs[:half]:
        us = ts // 1000
        body = struct.pack("<IIIII", 0, us >> 32, us & 0xFFFFFFFF, len(frame), len(frame)) + frame
        out += block(6, body)
    out += block(5, struct.pack("<III", 0, 0, 0) + option(0, b""))  # interface statistics: skipped
    idb_ns = block(
        1,
        struct.pack("<HHI", 1, 0, 0)
        + option(9, bytes([9]))
        + option(14, struct.pack("<q", 1))
        + option(0, b""),
    )
    idb_sll = block(1, struct.pack("<HHI", 113, 0, 0) + option(0, b""))
    out += shb + idb_ns + idb_sll
    for i, (ts, frame) in enumerate(recs[half:]):
        if i == 0:
            out += block(3, struct.pack("<I", len(frame)) + frame)
        else:
            iface, data = (1, sll(frame)) if i % 2 else (0, frame)
            body = struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(data), len(data)) + data
            out += block(6, body)
    return out


def advance_code(delta_ns):
    """The engine target's time code whose advance is nearest `delta_ns`."""
    if delta_ns <= 0:
        return 0
    best = min(range(1, 64), key=lambda v: abs(((1 + (v & 1)) << (v >> 1)) * 10**6 - delta_ns))
    return best


def engine_input(events, conf=0):
    """events: [(ts_ns or None, side 0/1, frame, join)] -> the engine target's input.
    An empty frame is a reload (with the member policy); its `side` is the whole ctl byte."""
    out = bytes([conf])
    last = None
    for ts, side, frame, join in events:
        v = 0 if ts is None or last is None else advance_code(ts - last)
        if ts is not None:
            last = ts
        if not frame:  # a reload: `side` holds the ctl bits that choose members
            out += bytes([side]) + struct.pack(">H", 0)
            continue
        ctl = (v << 2) | (2 if join else 0) | side
        out += bytes([ctl]) + struct.pack(">H", len(frame)) + frame
    return out


def main():
    # Only writes (and overwrites) its own seeds: the directories also hold
    # hand-made ones (regressions found by fuzzing, shaped members, ...)
    # that must survive a run. A seed renamed here leaves its old file.
    for sub in ("pcap", "engine"):
        os.makedirs(os.path.join(SEEDS, sub), exist_ok=True)

    def put(sub, name, data):
        with open(os.path.join(SEEDS, sub, name), "wb") as f:
            f.write(data)

    _, demo_in = read_pcap(os.path.join(GOLDEN, "demo", "inside.pcap"))
    _, demo_out = read_pcap(os.path.join(GOLDEN, "demo", "outside.pcap"))
    _, full_in = read_pcap(os.path.join(GOLDEN, "table-full", "inside.pcap"))
    _, full_out = read_pcap(os.path.join(GOLDEN, "table-full", "outside.pcap"))
    few = demo_in[:6]

    # pcap: mode byte (see pcap.rs), then a capture.
    put("pcap", "demo_inside", bytes([0x0F]) + pcap(demo_in))
    put("pcap", "demo_outside_trickle_peek", bytes([0x13]) + pcap(demo_out))
    put("pcap", "be_micro_batched", bytes([0x2F]) + pcap(few, big=True, nanos=False))
    put("pcap", "small_capacity", bytes([0x4F]) + pcap(few))
    put("pcap", "raw_ip", bytes([0x0F]) + pcap(few, link=101, strip=14))
    put("pcap", "ipv4_link", bytes([0x1F]) + pcap(few[:3], link=228, strip=14))
    put("pcap", "sll", bytes([0x05]) + pcap([(t, sll(f)) for t, f in few], link=113))
    put("pcap", "sll2", bytes([0x8F]) + pcap([(t, sll2(f)) for t, f in few], link=276))
    put("pcap", "pcapng", bytes([0x0F]) + pcapng(few))
    put("pcap", "pcapng_trickle_peek", bytes([0x14]) + pcapng(demo_out[:5]))
    put("pcap", "truncated", bytes([0x0F]) + pcap(few)[:-7])

    # engine: the golden cases, merged by time as `torwart replay` does.
    def merged(inside, outside):
        ev = [(t, 0, f) for t, f in inside] + [(t, 1, f) for t, f in outside]
        ev.sort(key=lambda e: (e[0], e[1]))
        return ev

    demo = merged(demo_in, demo_out)
    put("engine", "demo", engine_input([(t, s, f, False) for t, s, f in demo]))
    # The same traffic in batches (consecutive frames of one side share a batch).
    put("engine", "demo_batched", engine_input([(t, s, f, True) for t, s, f in demo]))
    # The member gateway (NAT, forwards, ...) on the example database: config bit 1.
    _, mem_in = read_pcap(os.path.join(GOLDEN, "members", "inside.pcap"))
    _, mem_out = read_pcap(os.path.join(GOLDEN, "members", "outside.pcap"))
    mem = merged(mem_in, mem_out)
    put("engine", "members", engine_input([(t, s, f, False) for t, s, f in mem], conf=2))
    # Batched, with reloads (empty frames) in the middle: one ending nobody,
    # one ending members 101 and 104 (ctl bits 2 and 5).
    ev = [(t, s, f, True) for t, s, f in mem]
    half = len(ev) // 2
    ev = ev[:half] + [(None, 0, b"", False)] + ev[half:] + [(None, (1 << 2) | (1 << 5), b"", False)] + ev[:4]
    put("engine", "members_reload", engine_input(ev, conf=2))
    # The member gateway in batches that reach the engine parsed by the
    # caller (the dataplane's steering): config bits 1 and 3.
    put("engine", "members_parsed", engine_input([(t, s, f, True) for t, s, f in mem], conf=2 | 8))
    full = merged(full_in, full_out)
    put("engine", "table_full", engine_input([(t, s, f, True) for t, s, f in full]))

    # Small scenarios from the frame seeds.
    frames = {n: open(os.path.join(SEEDS, n), "rb").read() for n in os.listdir(SEEDS) if os.path.isfile(os.path.join(SEEDS, n))}
    ms = 10**6
    put("engine", "tcp_handshake", engine_input([(0, 0, frames["tcp_syn"], False), (ms, 1, frames["tcp_synack"], False)]))
    put(
        "engine",
        "v6_fragments_out_of_order",
        engine_input([(0, 0, frames["ipv6_hbh_frag2"], False), (ms, 0, frames["ipv6_hbh_frag1"], False)]),
    )
    put(
        "engine",
        "v6_fragments_in_order",
        engine_input([(0, 0, frames["ipv6_hbh_frag1"], False), (ms, 0, frames["ipv6_hbh_frag2"], True)]),
    )
    # Regressions (fixed in f3f31ee): a held fragment dropped uncounted when
    # an overlapping fragment poisoned its datagram; a fragment held from the
    # outside released back to the outside by an inside first fragment.
    overlap = bytearray(frames["ipv6_hbh_frag2"])
    overlap[0x40:0x42] = struct.pack(">H", 1216)  # offset 1224 -> 1216, overlapping
    put(
        "engine",
        "regress_poison_held",
        engine_input(
            [(0, 0, frames["ipv6_hbh_frag2"], False), (ms, 0, bytes(overlap), False), (2 * ms, 0, frames["ipv6_hbh_frag1"], False)]
        ),
    )
    put(
        "engine",
        "regress_held_other_side",
        engine_input([(0, 1, frames["ipv6_hbh_frag2"], False), (ms, 0, frames["ipv6_hbh_frag1"], False)]),
    )
    put(
        "engine",
        "icmp_errors",
        engine_input(
            [
                (0, 0, frames["udp_dns"], False),
                (ms, 1, frames["icmp_port_unreach"], False),
                (2 * ms, 1, frames["vlan_icmp_time_exceeded"], False),
                (3 * ms, 1, frames["vlan_icmp6_too_big"], False),
            ]
        ),
    )
    put(
        "engine",
        "mixed_expiry",
        engine_input(
            [
                (0, 0, frames["vlan_tcp6_syn"], False),
                (0, 0, frames["icmpv6_echo_reply"], True),
                (0, 0, frames["arp_request"], True),
                (40 * 10**9, 1, frames["icmpv6_ns"], False),
                (200 * 10**9, 0, frames["mld2_hbh"], False),
                (200 * 10**9 + ms, 1, frames["icmp_echo_reply"], False),
            ],
            conf=1,
        ),
    )


if __name__ == "__main__":
    main()
