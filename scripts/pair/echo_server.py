"""The far end of a failover test: an echo server on port 9000.

Every connection sends lines "NAME SEQ"; each line comes back. For each
connection (by NAME) the server remembers every source address and port it
came from, and prints them as JSON when it stops after SECONDS:
a connection whose NAT source changed shows two.

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
