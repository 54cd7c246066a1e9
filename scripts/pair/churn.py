"""New flows for a sync-cost measurement: a UDP datagram from a new socket
(a new source port, so a new flow on the gateway) RATE times a second for
SECONDS to SERVER:9000, whose echo makes each flow answered (what a pair
syncs). Prints JSON: datagrams sent, echoes received.

Usage: churn.py RATE SECONDS [SERVER]
"""
import json
import select
import socket
import sys
import time

rate, seconds = float(sys.argv[1]), float(sys.argv[2])
server = sys.argv[3] if len(sys.argv) > 3 else "192.0.2.2"
sent = received = 0
open_socks = []
start = time.time()
next_send = start
while time.time() < start + seconds or open_socks:
    now = time.time()
    if now < start + seconds and now >= next_send:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.sendto(b"churn %d" % sent, (server, 9000))
        sent += 1
        open_socks.append((now, s))
        next_send += 1.0 / rate
    ready, _, _ = select.select([s for _, s in open_socks], [], [], 0.0005)
    for s in ready:
        try:
            s.recv(64)
            received += 1
        except OSError:
            pass
    # A socket is kept half a second for its echo, then closed.
    keep = []
    for t, s in open_socks:
        if s in ready or now - t > 0.5:
            s.close()
        else:
            keep.append((t, s))
    open_socks = keep
print(json.dumps({"sent": sent, "received": received}))
