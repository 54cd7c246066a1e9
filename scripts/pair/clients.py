"""The member's side of a failover test: N connections to SERVER:9000,
each sending a line every 50 ms and waiting for its echo, for SECONDS.

Prints JSON: per connection, its local port, the longest wait between two
echoes once it is open (the outage it saw) and the error that ended it
("reset" for a TCP RST), if any; and "u0", a UDP stream (a datagram every
10 ms, for SECONDS) with the longest wait between two echoes.

Usage: clients.py N SECONDS [SERVER]
"""
import json
import socket
import sys
import threading
import time

n, seconds = int(sys.argv[1]), float(sys.argv[2])
server = sys.argv[3] if len(sys.argv) > 3 else "192.0.2.2"
out = {}


def run(i):
    name = "c%d" % i
    longest, error, last, port = 0.0, None, time.time(), None
    try:
        s = socket.create_connection((server, 9000), timeout=10)
        port = s.getsockname()[1]
        # Outages are counted from here: the connection is open.
        last = time.time()
        s.settimeout(5)
        f = s.makefile("rwb", buffering=0)
        end = time.time() + seconds
        k = 0
        while time.time() < end:
            f.write(b"%s %d\n" % (name.encode(), k))
            line = f.readline()
            if not line:
                error = "closed"
                break
            now = time.time()
            longest = max(longest, now - last)
            last = now
            k += 1
            time.sleep(0.05)
    except ConnectionResetError:
        error = "reset"
    except OSError as e:
        error = type(e).__name__
    out[name] = {"longest": longest, "error": error, "port": port}


def udp_stream(name):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.connect((server, 9000))
    u.settimeout(0.005)
    longest, last, k, error = 0.0, None, 0, None
    end = time.time() + seconds
    next_send = time.time()
    while time.time() < end:
        if time.time() >= next_send:
            try:
                u.send(b"%s %d" % (name.encode(), k))
            except OSError as e:
                error = type(e).__name__
            k += 1
            next_send += 0.01
        try:
            u.recv(64)
            now = time.time()
            if last is not None:
                longest = max(longest, now - last)
            last = now
        except OSError:
            pass
    out[name] = {"longest": longest, "error": error if last is None else None, "port": u.getsockname()[1]}


threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
threads.append(threading.Thread(target=udp_stream, args=("u0",)))
for t in threads:
    t.start()
    time.sleep(0.01)
for t in threads:
    t.join()
print(json.dumps(out))
