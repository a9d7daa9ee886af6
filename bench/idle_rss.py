#!/usr/bin/env python3
"""bench/idle_rss.py - figure 5: resident memory of a proxy holding N idle keep-alive
client connections.

  idle_rss.py --target fanoutd:25090 [--target nginx:25081] [--conns 10000] [--rounds 3]
              [--path /] [--idle-s 3] --json OUT.json

Per round and target (order rotated each round): read the RSS (sum of VmRSS over the
processes that hold the listening socket, found with `ss -ltnp`: fanoutd itself, or an
nginx master and its workers), open N connections (at most 256 connecting at once), send
one keep-alive `GET PATH` on each and read the whole answer, leave them idle for IDLE_S,
check how many are still open (a peer close shows as EOF on a MSG_PEEK), read the RSS
again, close them all and read it once more.  Reports the RSS with N idle connections,
the RSS before, the growth per connection, how many connections were held, and the
proxy's open descriptors.  Raises its own RLIMIT_NOFILE soft limit to the hard limit.
Bounded: every connect/answer has a 10 s timeout, the whole run --max-seconds.
Stdlib only.  Last line: "idle_rss summary: ...".
"""
import argparse
import asyncio
import json
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time


def pids_of_port(port):
    out = subprocess.run(["ss", "-Hltnp", "sport = :%d" % port], capture_output=True,
                         text=True).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_mib(pids, key="VmRSS"):
    return sum(status_kib(p, key) for p in pids) / 1024.0


def nfds(pids):
    n = 0
    for p in pids:
        try:
            n += len(os.listdir("/proc/%d/fd" % p))
        except OSError:
            pass
    return n


async def one_conn(loop, port, path, sem, socks, errors):
    async with sem:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(s, ("127.0.0.1", port)), 10)
            await asyncio.wait_for(loop.sock_sendall(
                s, ("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path, port)).encode()), 10)
            buf = b""
            while True:
                chunk = await asyncio.wait_for(loop.sock_recv(s, 65536), 10)
                if not chunk:
                    raise ConnectionError("closed before the answer")
                buf += chunk
                head, sep, body = buf.partition(b"\r\n\r\n")
                if sep:
                    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                    if not head.startswith(b"HTTP/1.1 200"):
                        raise ConnectionError("status " + head.split(b"\r\n")[0].decode(errors="replace"))
                    if m and len(body) >= int(m.group(1)):
                        break
                    if not m:
                        raise ConnectionError("no content-length")
            socks.append(s)
        except (OSError, asyncio.TimeoutError, ConnectionError) as e:
            errors[type(e).__name__ + ":" + str(e)[:60]] = errors.get(type(e).__name__ + ":" + str(e)[:60], 0) + 1
            s.close()


def still_open(s):
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


async def measure(name, port, a):
    loop = asyncio.get_running_loop()
    pids = pids_of_port(port)
    if not pids:
        raise SystemExit("idle_rss: nothing listens on 127.0.0.1:%d (%s)" % (port, name))
    base = rss_mib(pids)
    t0 = time.monotonic()
    socks, errors = [], {}
    sem = asyncio.Semaphore(256)
    await asyncio.gather(*(one_conn(loop, port, a.path, sem, socks, errors) for _ in range(a.conns)))
    t_open = time.monotonic() - t0
    await asyncio.sleep(a.idle_s)
    held = sum(1 for s in socks if still_open(s))
    rss, hwm, fds = rss_mib(pids), rss_mib(pids, "VmHWM"), nfds(pids)
    for s in socks:
        s.close()
    await asyncio.sleep(2)
    after = rss_mib(pids)
    rec = {"target": name, "port": port, "pids": pids, "conns_target": a.conns,
           "answered": len(socks), "held": held, "errors": errors, "open_s": round(t_open, 2),
           "base_rss_mib": round(base, 2), "rss_mib": round(rss, 2), "hwm_mib": round(hwm, 2),
           "after_close_rss_mib": round(after, 2), "fds": fds,
           "kib_per_conn": round((rss - base) * 1024 / held, 2) if held else None}
    print("idle_rss: %s :%d  held %d/%d  RSS %.1f MiB (before %.1f, after close %.1f, "
          "%s KiB/conn)  fds %d  open %.1fs  errors %s" % (
              name, port, held, a.conns, rss, base, after, rec["kib_per_conn"], fds, t_open,
              errors or 0), flush=True)
    return rec


def mmm(v):
    return {"med": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)} if v else \
        {"med": None, "min": None, "max": None, "n": 0}


async def main_async(a):
    targets = []
    for t in a.target:
        name, _, port = t.partition(":")
        targets.append((name, int(port)))
    recs = []
    for r in range(a.rounds):
        for i in range(len(targets)):
            name, port = targets[(i + r) % len(targets)]
            rec = await measure(name, port, a)
            rec["round"] = r + 1
            recs.append(rec)
    out = {"rounds": recs}
    for name, _ in targets:
        rs = [x for x in recs if x["target"] == name]
        out[name] = {"conns_target": a.conns,
                     "rss_mib": mmm([x["rss_mib"] for x in rs]),
                     "base_rss_mib": mmm([x["base_rss_mib"] for x in rs]),
                     "fresh_base_rss_mib": min(rs, key=lambda x: x["round"])["base_rss_mib"],
                     "after_close_rss_mib": mmm([x["after_close_rss_mib"] for x in rs]),
                     "held": mmm([x["held"] for x in rs]),
                     "kib_per_conn": mmm([x["kib_per_conn"] for x in rs if x["kib_per_conn"]]),
                     "fds": mmm([x["fds"] for x in rs])}
    with open(a.json, "w") as f:
        json.dump(out, f, indent=1)
    print("idle_rss summary: " + "; ".join(
        "%s RSS %.1f MiB (min %.1f max %.1f) held min %d/%d" % (
            n, out[n]["rss_mib"]["med"], out[n]["rss_mib"]["min"], out[n]["rss_mib"]["max"],
            out[n]["held"]["min"], a.conns) for n, _ in targets))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", action="append", required=True, help="NAME:PORT (repeat)")
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--path", default="/")
    ap.add_argument("--idle-s", type=float, default=3.0)
    ap.add_argument("--json", required=True)
    ap.add_argument("--max-seconds", type=float, default=300)
    a = ap.parse_args()
    if not (1 <= a.conns <= 50000 and 1 <= a.rounds <= 10):
        ap.error("bounds: conns 1..50000, rounds 1..10")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.conns + 100 > hard:
        print("idle_rss: warning: RLIMIT_NOFILE hard limit %d < conns + 100" % hard, file=sys.stderr)

    async def bounded():
        await asyncio.wait_for(main_async(a), a.max_seconds)
    asyncio.run(bounded())


if __name__ == "__main__":
    main()
