#!/usr/bin/env python3
"""Opens N keep-alive connections to HOST:PORT, sends one GET PATH on each,
reads the response head and body (Content-Length), then holds every connection
open and idle until stdin closes or HOLD seconds pass. Prints "ready N" once
all N have been answered. Used by loadtest/idle.sh."""
import resource
import select
import socket
import sys
import time


def one(host, port, path):
    s = socket.create_connection((host, port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before a response")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += s.recv(65536)
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"unexpected response: {head[:40]!r}")
    return s


def main():
    host, port, path, n, hold = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n + 64)), hard))
    conns = [one(host, port, path) for _ in range(n)]
    print(f"ready {len(conns)}", flush=True)
    # Idle until told to stop; a connection the server closes is reported.
    deadline = time.time() + hold
    closed = 0
    while time.time() < deadline:
        r, _, _ = select.select([sys.stdin], [], [], 0.2)
        if r and not sys.stdin.readline():
            break
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        s.close()
    print(f"closed-by-server {closed}", flush=True)


if __name__ == "__main__":
    main()
