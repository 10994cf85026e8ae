#!/usr/bin/env python3
"""Turns loadgen's JSON lines into comparison rows and the tables of perf/RESULTS.md.

    report.py row NAME SCANSTREAM.json PEER.json [LABEL_A LABEL_B]
                                                   both rows and the ratios
    report.py ok FILE.json                         exit 0 when p99 <= 50 ms and nothing lost
    report.py median OUT.json IN.json...           a row of the medians of the rows IN
    report.py markdown DIR [tls]                   every scenario found in DIR as tables
                                                   (tls: scanstream over TLS vs plain)
    report.py splice RESULTS.md TABLES.md          puts the tables between the markers
    report.py step RATE NAME FILE.json             one line on a step of the ladder
    report.py ladder DIR FIRST SECOND [LABEL_A LABEL_B]
                                                   the ladder's table and each server's ceilings
"""
import glob
import json
import os
import statistics
import subprocess
import sys

BEGIN = "<!-- scenarios:begin (perf/run.sh all writes this part) -->"
END = "<!-- scenarios:end -->"


def machine():
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    date = subprocess.run(["date", "-u", "+%Y-%m-%d %H:%M UTC"], capture_output=True, text=True).stdout.strip()
    return "Machine: `nproc` = {}, {}; commit {}; {}.".format(os.cpu_count(), model, commit or "?", date)

FIELDS = [
    ("msgs_per_s", "msgs/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p99_ms", "p99 ms", "{:.3f}"),
    ("p999_ms", "p99.9 ms", "{:.3f}"),
    ("max_ms", "max ms", "{:.3f}"),
    ("lost", "lost", "{:d}"),
    ("duplicated", "dup", "{:d}"),
    ("server_cpu_ns_per_msg", "CPU ns/msg", "{:,.0f}"),
    ("server_rss_kib_max", "RSS KiB", "{:,d}"),
    ("server_rss_kib_idle", "idle RSS KiB", "{:,d}"),
    ("rss_b_per_conn", "B/conn", "{:,d}"),
    ("cycles_per_s", "cycles/s", "{:,.0f}"),
    ("server_cpu_ns_per_cycle", "CPU ns/cycle", "{:,.0f}"),
    ("errors", "errors", "{:d}"),
    ("connected", "clients", "{:d}"),
    ("connect_failures", "conn fail", "{:d}"),
    ("min_per_client", "min/client", "{:d}"),
    ("max_per_client", "max/client", "{:d}"),
]


def load(path):
    try:
        with open(path) as f:
            lines = [l for l in f if l.strip().startswith("{")]
        row = json.loads(lines[-1]) if lines else None
    except (OSError, ValueError):
        return None
    # run.sh saves the results the server conflated during a ladder step beside the row.
    try:
        with open(path[: -len(".json")] + ".conflated") as f:
            row["conflated"] = int(f.read().strip())
    except (OSError, ValueError, TypeError):
        pass
    # run.sh saves the server's RSS before any client beside the row.
    try:
        with open(path[: -len(".json")] + ".rss0") as f:
            idle = int(f.read().strip())
        row["server_rss_kib_idle"] = idle
        if row.get("connected") and row.get("server_rss_kib_end"):
            row["rss_b_per_conn"] = (row["server_rss_kib_end"] - idle) * 1024 // row["connected"]
    except (OSError, ValueError, TypeError):
        pass
    return row


def median(out, paths):
    """Writes the row of the medians of the rows in PATHS (rounds of one scenario, each
    read with its idle RSS) to OUT. A field that is not a number in every row, a map of
    close codes say, is the last round's."""
    rows = [r for r in (load(p) for p in paths) if r]
    if not rows:
        return 1
    med = {}
    for key in rows[-1]:
        vals = [r.get(key) for r in rows]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            m = statistics.median(vals)
            med[key] = round(m) if all(isinstance(v, int) for v in vals) else m
        else:
            med[key] = rows[-1][key]
    med["rounds"] = len(rows)
    with open(out, "w") as f:
        f.write(json.dumps(med, sort_keys=True) + "\n")
    # The median row carries its idle RSS and bytes per connection already; an idle RSS
    # file left beside it by an earlier single run would override them.
    try:
        os.remove(out[: -len(".json")] + ".rss0")
    except OSError:
        pass
    return 0


def cell(row, key, fmt):
    if row is None or row.get(key) is None:
        return "-"
    try:
        return fmt.format(row[key])
    except (ValueError, TypeError):
        return str(row[key])


def ratio(a, b, key):
    if not a or not b or not a.get(key) or not b.get(key):
        return "-"
    return "{:.2f}".format(a[key] / b[key])


def table(name, scan, peer, labels=("scanstream", "tokio peer")):
    out = ["| {} | {} |".format(name, " | ".join(label for _, label, _ in FIELDS))]
    out.append("|" + "---|" * (len(FIELDS) + 1))
    for label, row in zip(labels, (scan, peer)):
        out.append("| {} | {} |".format(label, " | ".join(cell(row, k, f) for k, _, f in FIELDS)))
    out.append(
        "| {} / {} | {} |".format(
            labels[0],
            "peer" if labels[1] == "tokio peer" else labels[1],
            " | ".join(ratio(scan, peer, k) if k in RATIOS else "" for k, _, _ in FIELDS),
        )
    )
    return "\n".join(out)


RATIOS = {
    "msgs_per_s",
    "p50_ms",
    "p99_ms",
    "server_cpu_ns_per_msg",
    "server_rss_kib_max",
    "rss_b_per_conn",
    "cycles_per_s",
    "server_cpu_ns_per_cycle",
}


# The ladder: 1,000 subscribers taking every result, the firehose rate rising step by step.
LADDER = [
    ("msgs_per_s", "delivered msg/s", "{:,.0f}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p99_ms", "p99 ms", "{:.3f}"),
    ("gaps", "seq gaps", "{:,d}"),
    ("lost", "skipped seqs", "{:,d}"),
    ("skipped_per_client", "skipped/client", "{:,.0f}"),
    ("conflated", "conflated", "{:,d}"),
    ("duplicated", "dup", "{:d}"),
    ("disconnects", "disconnects", "{:d}"),
    ("table_check", "table check", "{}"),
    ("server_cpu_pct", "server CPU %", "{:.0f}"),
    ("loadgen_busy_pct", "loadgen busy %", "{:.0f}"),
]


def ladder_row(row):
    """A step's row with the ladder's derived figures."""
    if row is None:
        return None
    row = dict(row)
    clients = row.get("fairness_clients") or row.get("connected")
    if clients and row.get("lost") is not None:
        row["skipped_per_client"] = row["lost"] / clients
    if row.get("server_cpu_s") is not None and row.get("duration_s"):
        row["server_cpu_pct"] = 100.0 * row["server_cpu_s"] / row["duration_s"]
    if row.get("table_check") not in (None, "off", "pass"):
        checked, sampled = row.get("tables_checked"), row.get("tables_sampled")
        if row["table_check"] != "unsupported" and sampled:
            row["table_check"] = "{} ({}/{})".format(row["table_check"], checked, sampled)
    return row


def ladder_rates(d, name):
    """The rates of the ladder steps of server NAME found in D, in order."""
    rates = []
    for p in glob.glob(os.path.join(d, "ladder-*-" + name + ".json")):
        rate = os.path.basename(p)[len("ladder-") : -len("-" + name + ".json")]
        if rate.isdigit():
            rates.append(int(rate))
    return sorted(rates)


def step_ok(row, p99_max, conflation):
    """Whether a step counts towards a ceiling: results came, no connection failed or was
    dropped, no table differed, p99 within P99_MAX. Without CONFLATION no seq was
    skipped and nothing conflated. With it, skipped seqs are allowed as far as the
    server's conflation counter explains them: each conflated result is at most one
    skipped seq per subscriber (a bound that holds whether the counter counts results or
    deliveries); a server without the counter (the peer) may skip none."""
    if row is None or not row.get("messages") or row.get("p99_ms") is None:
        return False
    if row.get("connect_failures") or row.get("disconnects") or row["p99_ms"] > p99_max:
        return False
    if str(row.get("table_check", "off")).startswith("fail"):
        return False
    lost, conflated = row.get("lost") or 0, row.get("conflated")
    if not conflation:
        return lost == 0 and not conflated
    return lost <= (conflated or 0) * (row.get("connected") or 0)


def ceiling(rows, p99_max, conflation):
    """The highest rate whose step is good (None: none is), and the lower rates whose
    steps are not."""
    good = [rate for rate, row in rows if step_ok(row, p99_max, conflation)]
    if not good:
        return None, []
    return good[-1], [rate for rate, _ in rows if rate < good[-1] and rate not in good]


def ladder(d, names, labels):
    rates = sorted(set(ladder_rates(d, names[0])) | set(ladder_rates(d, names[1])))
    if not rates:
        return None
    out = ["| rate/s | server | {} |".format(" | ".join(label for _, label, _ in LADDER))]
    out.append("|" + "---|" * (len(LADDER) + 2))
    per_server = {name: [] for name in names}
    for rate in rates:
        for name, label in zip(names, labels):
            row = ladder_row(load(os.path.join(d, "ladder-{}-{}.json".format(rate, name))))
            per_server[name].append((rate, row))
            cells = " | ".join(cell(row, k, f) for k, _, f in LADDER)
            out.append("| {:,} | {} | {} |".format(rate, label, cells))
    out.append("")
    for name, label in zip(names, labels):
        rows = per_server[name]
        clean = ceiling(rows, 50, False)
        loose = ceiling(rows, 100, True)

        def say(c):
            best, below = c
            if best is None:
                return "no rate"
            text = "{:,} results/s".format(best)
            if below:
                text += " (but not {})".format(", ".join("{:,}".format(r) for r in below))
            return text

        out.append(
            "- {}: {} with nothing conflated or skipped and p99 <= 50 ms; "
            "{} with p99 <= 100 ms at any conflation.".format(label, say(clean), say(loose))
        )
    return "\n".join(out)


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd = argv[1]
    if cmd == "row" and len(argv) in (5, 7):
        labels = tuple(argv[5:7]) if len(argv) == 7 else ("scanstream", "tokio peer")
        print(table(argv[2], load(argv[3]), load(argv[4]), labels))
        return 0
    if cmd == "ok" and len(argv) == 3:
        row = load(argv[2])
        good = (
            row is not None
            and row.get("p99_ms", 1e9) <= 50
            and row.get("lost", 1) == 0
            and row.get("connect_failures", 1) == 0
            and row.get("messages", 0) > 0
        )
        return 0 if good else 1
    if cmd == "step" and len(argv) == 5:
        row = ladder_row(load(argv[4]))
        if row is None:
            print("ladder {}/s {}: no row".format(argv[2], argv[3]))
            return 0
        print(
            "ladder {:>5}/s {:<14} {} msg/s  p50 {} p99 {} ms  gaps {} ({} skipped)  conflated {}  "
            "disconnects {}  table check {}  server CPU {} %".format(
                argv[2],
                argv[3],
                cell(row, "msgs_per_s", "{:,.0f}"),
                cell(row, "p50_ms", "{:.3f}"),
                cell(row, "p99_ms", "{:.3f}"),
                cell(row, "gaps", "{:,d}"),
                cell(row, "lost", "{:,d}"),
                cell(row, "conflated", "{:,d}"),
                cell(row, "disconnects", "{:d}"),
                cell(row, "table_check", "{}"),
                cell(row, "server_cpu_pct", "{:.0f}"),
            )
        )
        return 0
    if cmd == "ladder" and len(argv) in (5, 7):
        labels = tuple(argv[5:7]) if len(argv) == 7 else tuple(argv[3:5])
        text = ladder(argv[2], (argv[3], argv[4]), labels)
        print(text if text else "no ladder rows in " + argv[2])
        return 0
    if cmd == "median" and len(argv) >= 4:
        return median(argv[2], argv[3:])
    if cmd == "splice" and len(argv) == 4:
        with open(argv[2]) as f:
            text = f.read()
        with open(argv[3]) as f:
            tables = f.read()
        if BEGIN not in text or END not in text:
            print("no markers in " + argv[2], file=sys.stderr)
            return 1
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        with open(argv[2], "w") as f:
            f.write(head + BEGIN + "\n\n" + tables.strip() + "\n\n" + END + tail)
        return 0
    if cmd == "markdown" and (len(argv) == 3 or (len(argv) == 4 and argv[3] == "tls")):
        d = argv[2]
        if len(argv) == 4:
            pair, labels, title = ("scanstream-tls", "scanstream"), ("scanstream TLS", "scanstream plain"), " over TLS"
        else:
            pair, labels, title = ("scanstream", "peer"), ("scanstream", "tokio peer"), ""
        print(machine() + "\n")
        for name in ["latency", "latency-1k", "fanout-1k", "saturate", "idle-10k", "churn"]:
            a = load(os.path.join(d, name + "-" + pair[0] + ".json"))
            b = load(os.path.join(d, name + "-" + pair[1] + ".json"))
            if a or b:
                print("### " + name + title + "\n")
                print(table(name, a, b, labels) + "\n")
        text = ladder(d, pair, labels)
        if text:
            print("### ladder" + title + "\n")
            print(text + "\n")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
