#!/usr/bin/env python3
"""Server RSS per idle subscribed WebSocket: opens N connections to a running server,
subscribes each to a filter that matches nothing, and compares the server's VmRSS.

usage: perf/idle_rss.py PORT N SERVER_PID
"""
import socket, sys, time, os, struct
port=int(sys.argv[1]); n=int(sys.argv[2]); pid=int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
def frame(p):
    m=b"\x01\x02\x03\x04"; b=bytes(c^m[i%4] for i,c in enumerate(p))
    return bytes([0x81,0x80|len(p)])+m+b
base=rss(); socks=[]
for i in range(n):
    s=socket.create_connection(("127.0.0.1",port))
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"+frame(b'{"type":"subscribe","data":{"filters":{"symbols":["NONE"]}}}'))
    socks.append(s)
time.sleep(2)
for s in socks: s.recv(65536)
time.sleep(1)
after=rss()
print(f"rss idle server {base} KiB, with {n} subscribed idle websockets {after} KiB, per connection {(after-base)*1024/n:.0f} B")
