#!/usr/bin/env python3
"""Samples a producer, an edge and Redis for a while and prints how fast results went
through the bus and what each process spent on one.

    bus_rate.py SECONDS PRODUCER_PORT PRODUCER_PID EDGE_PORT EDGE_PID REDIS_PID

Results per second: the producer's (its status `results_total`) and the edge's (its
`scanstream_events_published_total`). CPU per result: each process's utime + stime
over the window (from /proc/PID/stat), divided by the results the edge took in.
"""
import json
import os
import sys
import time
import urllib.request

TICK = os.sysconf("SC_CLK_TCK")


def get(port, path):
    req = urllib.request.Request("http://127.0.0.1:{}{}".format(port, path), headers={"Host": "localhost"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return r.read().decode()


def produced(port):
    return json.loads(get(port, "/stream/status"))["results_total"]


def ingested(port):
    for line in get(port, "/metrics").splitlines():
        if line.startswith("scanstream_events_published_total "):
            return int(line.split()[1])
    return 0


def cpu_ns(pid):
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1_000_000_000 // TICK


def main(argv):
    if len(argv) != 7:
        print(__doc__)
        return 2
    seconds = float(argv[1])
    pport, ppid, eport, epid, rpid = argv[2], int(argv[3]), argv[4], int(argv[5]), int(argv[6])
    start = (time.monotonic(), produced(pport), ingested(eport), cpu_ns(ppid), cpu_ns(epid), cpu_ns(rpid))
    time.sleep(seconds)
    end = (time.monotonic(), produced(pport), ingested(eport), cpu_ns(ppid), cpu_ns(epid), cpu_ns(rpid))
    d = [b - a for a, b in zip(start, end)]
    took = max(d[2], 1)
    row = {
        "produced_per_s": round(d[1] / d[0]),
        "ingested_per_s": round(d[2] / d[0]),
        "producer_cpu_ns_per_result": d[3] // took,
        "edge_cpu_ns_per_result": d[4] // took,
        "redis_cpu_ns_per_result": d[5] // took,
        "behind": end[1] - end[2],
    }
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
