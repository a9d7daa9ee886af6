#!/usr/bin/env python3
"""bench/instructions.py - user-space instructions per proxied request (callgrind).

    bench/instructions.py [--fanoutd PATH] [--requests N] [--conns C] [--top K]
                          [--proto h1|h2c] [--upstream-extra 'KEY = VALUE' ...] [--keep]
                          [--legs N] [--runs N]

Runs fanoutd (1 worker, mode proxy to a local fake upstream) under
`valgrind --tool=callgrind` twice: once for a few requests and once for N more, on C
keep-alive connections (HTTP/1.1, or with --proto h2c one HTTP/2 stream at a time
on each of C prior-knowledge connections: python3-h2), and prints the difference in
instructions divided by N.  The
start-up and shutdown cancel out, so the figure is what one more request costs in user
space (fanoutd, libcurl, libevent, libc): deterministic, unlike timings on a shared box,
which makes it the way to tell whether a change to the hot path helped.  Kernel time is
not counted (see cpu_per_request.py for that).  Then the K costliest functions per
request, each the difference between the two runs as well (so the dynamic linker's
start-up work is not one of them); --keep leaves both callgrind outputs in the run
directory.  Loopback only; every process it starts is stopped by PID.
--runs N repeats the pair N times and reports the median (libcurl's share moves by
about 3% from run to run with the timing of the upstream's answers).
--legs N (N >= 2) makes it fan-out(N) instead: mode all over N fake upstreams, each
answering a small JSON body, so the figure is per request of N legs and the envelope.
--upstream-extra adds a line to the upstream's section, e.g.
`--upstream-extra 'health_check = /health' --upstream-extra 'health_interval = 1s'`
(the fake upstream answers any path 200); the configuration is printed.
"""
import argparse
import glob
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.dont_write_bytecode = True
from fakeupstream import FakeUpstream  # noqa: E402


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


TARGET = "/x?body=ok"
# fan-out: each leg answers a small JSON document, as bench/fanout.sh's nginx does
TARGET_JSON = "/x?body=%7B%22ok%22%3Atrue%2C%22n%22%3A1%7D"


def drive(port, n, conns, target=TARGET):
    """n GET requests over conns keep-alive connections, one in flight on each."""
    req = ("GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % target).encode()
    socks = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(conns)]
    bufs = [b""] * conns
    done = 0
    try:
        while done < n:
            batch = min(conns, n - done)
            for s in socks[:batch]:
                s.sendall(req)
            for i in range(batch):
                while True:
                    h = bufs[i].find(b"\r\n\r\n")
                    if h >= 0:
                        m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", bufs[i][:h + 2])
                        end = h + 4 + (int(m.group(1)) if m else 0)
                        if len(bufs[i]) >= end:
                            if not bufs[i].startswith(b"HTTP/1.1 200"):
                                raise SystemExit("instructions: not a 200: %r" % bufs[i][:80])
                            bufs[i] = bufs[i][end:]
                            break
                    d = socks[i].recv(65536)
                    if not d:
                        raise SystemExit("instructions: fanoutd closed a connection")
                    bufs[i] += d
                done += 1
    finally:
        for s in socks:
            s.close()


def drive_h2c(port, n, conns, target=TARGET):
    """n GET requests as HTTP/2 streams over conns h2c connections, one
    stream in flight on each."""
    import h2.config
    import h2.connection
    import h2.events
    peers = []
    for _ in range(conns):
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        h = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        h.initiate_connection()
        s.sendall(h.data_to_send())
        peers.append((s, h))
    hdrs = [(":method", "GET"), (":path", target), (":scheme", "http"),
            (":authority", "bench")]
    done = 0
    try:
        while done < n:
            batch = min(conns, n - done)
            sids = []
            for s, h in peers[:batch]:
                sid = h.get_next_available_stream_id()
                h.send_headers(sid, hdrs, end_stream=True)
                s.sendall(h.data_to_send())
                sids.append(sid)
            for (s, h), sid in zip(peers[:batch], sids):
                status = None
                ended = False
                while not ended:
                    d = s.recv(65536)
                    if not d:
                        raise SystemExit("instructions: fanoutd closed a connection")
                    for ev in h.receive_data(d):
                        if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                            status = dict(ev.headers).get(b":status")
                        elif isinstance(ev, h2.events.DataReceived):
                            h.acknowledge_received_data(ev.flow_controlled_length,
                                                        ev.stream_id)
                        elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                            ended = True
                    s.sendall(h.data_to_send())
                if status != b"200":
                    raise SystemExit("instructions: not a 200: %r" % status)
                done += 1
    finally:
        for s, _ in peers:
            s.close()


def run(binary, up_urls, n, conns, tmp, tag, proto="h1", extra=()):
    port, admin = free_port(), free_port()
    conf = os.path.join(tmp, "fanoutd.ini")
    names = ["up"] if len(up_urls) == 1 else ["up%d" % i for i in range(len(up_urls))]
    with open(conf, "w") as f:
        f.write("[server]\nlisten = 127.0.0.1:%d\nworkers = 1\naccess_log = off\n"
                "log_level = warn\n[admin]\nlisten = 127.0.0.1:%d\n" % (port, admin))
        for name, url in zip(names, up_urls):
            f.write("[upstream \"%s\"]\nurl = %s\n%s" % (name, url,
                                                          "".join(x + "\n" for x in extra)))
        f.write("[route \"r\"]\nmatch = /\nupstreams = %s\n%s" % (
            ", ".join(names), "" if len(names) == 1 else "mode = all\n"))
    out = os.path.join(tmp, "callgrind.%s" % tag)
    with open(os.path.join(tmp, "stderr.%s" % tag), "w") as err:
        p = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                              binary, "-c", conf], stdout=err, stderr=err)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("instructions: fanoutd did not start (see %s)" % tmp)
                time.sleep(0.1)     # polling for the listener, bounded above
        (drive_h2c if proto == "h2c" else drive)(port, n, conns,
                                                 TARGET if len(up_urls) == 1 else TARGET_JSON)
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    with open(out) as f:
        m = re.search(r"^(?:summary|totals): *(\d+)", f.read(), re.M)
    if not m:
        raise SystemExit("instructions: no totals in %s" % out)
    return int(m.group(1)), out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--fanoutd", default=os.path.join(HERE, "..", "fanoutd"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--proto", choices=("h1", "h2c"), default="h1",
                    help="the client side: HTTP/1.1 (default) or h2c")
    ap.add_argument("--upstream-extra", action="append", default=[], metavar="'KEY = VALUE'",
                    help="a line added to the upstream's section (repeatable)")
    ap.add_argument("--runs", type=int, default=1,
                    help="repeat the pair of runs; report the median (default 1)")
    ap.add_argument("--legs", type=int, default=1,
                    help="N >= 2: fan-out(N), mode all over N fake upstreams (JSON bodies)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the callgrind outputs (callgrind_annotate --tree=caller)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fanoutd-instr-")
    if a.legs < 1 or a.runs < 1:
        ap.error("--legs and --runs: at least 1")
    ups = [FakeUpstream("up%d" % i) for i in range(a.legs)]
    try:
        urls = [up.url for up in ups]
        base = max(a.conns * 50, 200)
        pairs = []
        for k in range(a.runs):
            i0, out_short = run(a.fanoutd, urls, base, a.conns, tmp, "short%d" % k, a.proto,
                                a.upstream_extra)
            i1, out = run(a.fanoutd, urls, base + a.requests, a.conns, tmp, "long%d" % k,
                          a.proto, a.upstream_extra)
            pairs.append(((i1 - i0) / a.requests, out_short, out))
    finally:
        for up in ups:
            up.close()
    # libcurl's share moves by about 3% from run to run with the timing of
    # the fake upstream's answers: several runs, the median one reported.
    pairs.sort(key=lambda p: p[0])
    per, out_short, out = pairs[len(pairs) // 2]
    with open(os.path.join(tmp, "fanoutd.ini")) as f:
        print("config:\n" + "".join("  " + ln for ln in f))
    print("user-space instructions per %s request (%s): %.0f (%d requests, %d "
          "connections, callgrind; runs in %s)" % (
              "proxied" if a.legs == 1 else "fan-out(%d)" % a.legs, a.proto, per, a.requests,
              a.conns, tmp))
    if a.runs > 1:
        print("median of %d runs: %s" % (a.runs, ", ".join("%.0f" % p[0] for p in pairs)))
    # Per function, the difference between the two runs over the requests
    # between them: start-up (the dynamic linker, configuration, TLS
    # libraries) cancels out, as it does in the total.
    short, long_ = functions(out_short), functions(out)
    diff = sorted(((v - short.get(k, 0)) / a.requests, k) for k, v in long_.items())
    objs = {}
    for per_fn, name in diff:
        m = re.search(r"\[([^\]]*)\]\s*$", name)
        obj = os.path.basename(m.group(1)) if m else "?"
        obj = re.sub(r"\.so[.\d]*$", "", obj)
        objs[obj] = objs.get(obj, 0) + per_fn
    print("by object: " + ", ".join("%s %.0f" % (k, v) for k, v in
                                    sorted(objs.items(), key=lambda kv: -kv[1]) if v >= 50))
    for per_fn, name in reversed(diff[-a.top:]):
        print("%9.0f  %s" % (per_fn, name[:110]))
    if not a.keep:
        for f in glob.glob(os.path.join(tmp, "callgrind.*")):
            os.unlink(f)


def functions(out):
    """{function: instructions} of a callgrind output (exclusive)."""
    ann = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", out],
                         capture_output=True, text=True).stdout
    fns = {}
    for line in ann.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        fns[m.group(2)] = fns.get(m.group(2), 0) + int(m.group(1).replace(",", ""))
    return fns


if __name__ == "__main__":
    main()
