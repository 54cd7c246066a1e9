"""New flows for a sync-cost measurement: a UDP datagram from a new socket
(a new source port, so a new flow on the gateway) RATE times a second for
SECONDS to SERVER:9000, whose echo makes each flow answered (what a pair
syncs). Prints JSON: datagrams sent, echoes received.

Usage: churn.py RATE SECONDS [SERVER]
"""
import collections
import json
import select
import socket
import sys
import time

rate, seconds = float(sys.argv[1]), float(sys.argv[2])
server = sys.argv[3] if len(sys.argv) > 3 else "192.0.2.2"
sent = received = 0
# Sockets by descriptor, and in the order they were opened (epoll, so that
# thousands of open sockets cost nothing per wait).
open_socks = {}
order = collections.deque()
ep = select.epoll()
start = time.time()
next_send = start
while time.time() < start + seconds or open_socks:
    now = time.time()
    while now < start + seconds and now >= next_send:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        s.sendto(b"churn %d" % sent, (server, 9000))
        sent += 1
        open_socks[s.fileno()] = s
        order.append((now, s))
        ep.register(s.fileno(), select.EPOLLIN)
        next_send += 1.0 / rate
    for fd, _ in ep.poll(0.0005):
        s = open_socks.pop(fd, None)
        if s is None:
            continue
        try:
            s.recv(64)
            received += 1
        except OSError:
            pass
        ep.unregister(fd)
        s.close()
    # A socket is kept half a second for its echo, then closed.
    while order and (order[0][1].fileno() == -1 or now - order[0][0] > 0.5):
        t, s = order.popleft()
        if s.fileno() != -1:
            open_socks.pop(s.fileno(), None)
            ep.unregister(s.fileno())
            s.close()
print(json.dumps({"sent": sent, "received": received}))
