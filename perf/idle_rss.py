#!/usr/bin/env python3
"""Server RSS per idle subscribed WebSocket: opens N connections to a running server,
subscribes each to a filter that matches nothing, and compares the server's VmRSS.

usage: perf/idle_rss.py PORT N SERVER_PID [--tls]

--tls speaks wss:// (a server started with --tls-cert and --tls-key), with an unverified
context: what is measured is the server's memory, and the certificate is a test one.
"""
import os, resource, socket, ssl, sys, time

args = [a for a in sys.argv[1:] if a != "--tls"]
tls = "--tls" in sys.argv[1:]
if len(args) != 3:
    sys.exit(__doc__)
port, n, pid = int(args[0]), int(args[1]), int(args[2])
# One descriptor per connection: raise the soft limit as far as the hard one allows.
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
ctx = None
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def frame(p):
    m=b"\x01\x02\x03\x04"; b=bytes(c^m[i%4] for i,c in enumerate(p))
    return bytes([0x81,0x80|len(p)])+m+b
base=rss(); socks=[]
for i in range(n):
    s=socket.create_connection(("127.0.0.1",port))
    if ctx:
        s=ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.settimeout(10)
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"+frame(b'{"type":"subscribe","data":{"filters":{"symbols":["NONE"]}}}'))
    socks.append(s)
time.sleep(2)
for s in socks: s.recv(65536)
time.sleep(1)
after=rss()
kind = "wss" if tls else "ws"
print(f"rss idle server {base} KiB, with {n} subscribed idle {kind} websockets {after} KiB, per connection {(after-base)*1024/n:.0f} B")
