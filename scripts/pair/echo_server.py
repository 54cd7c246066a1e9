"""The far end of a failover test: an echo server on port 9000 (TCP and UDP).

Every connection sends lines "NAME SEQ"; each line comes back. For each
connection (by NAME) the server remembers every source address and port it
came from, and prints them as JSON when it stops after SECONDS:
a connection whose NAT source changed shows two. UDP datagrams are echoed;
those of a stream named "u..." are remembered the same way ("churn" ones,
each from a new port, are not).

Usage: echo_server.py SECONDS
"""
import json
import socket
import sys
import threading
import time

seen = {}
lock = threading.Lock()


def serve(conn, addr):
    f = conn.makefile("rwb", buffering=0)
    try:
        for line in f:
            name = line.split()[0].decode()
            with lock:
                seen.setdefault(name, set()).add("%s:%d" % addr)
            f.write(line)
    except OSError:
        pass


def serve_udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("0.0.0.0", 9000))
    while True:
        data, addr = u.recvfrom(2048)
        name = data.split()[0].decode() if data.split() else ""
        if name.startswith("u"):
            with lock:
                seen.setdefault(name, set()).add("%s:%d" % addr)
        u.sendto(data, addr)


threading.Thread(target=serve_udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(512)
s.settimeout(0.2)
end = time.time() + float(sys.argv[1])
while time.time() < end:
    try:
        c, a = s.accept()
        threading.Thread(target=serve, args=(c, a), daemon=True).start()
    except socket.timeout:
        pass
print(json.dumps({k: sorted(v) for k, v in seen.items()}))
