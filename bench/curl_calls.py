#!/usr/bin/env python3
"""bench/curl_calls.py - per proxied request: instructions by object and calls of chosen functions.

    bench/curl_calls.py [--fanoutd PATH] [--requests N] [--conns C] [--keep DIR]
                        [--func NAME ...]

The method of instructions.py (fanoutd, 1 worker, under callgrind, a short run and a
run N requests longer, against the integration tests' fake upstream; the difference is
what N more requests cost), but it reads the callgrind files itself and prints, per
request: user-space instructions by object (fanoutd, libcurl, libc, libevent, ...), and how
many times the chosen functions were called (default: malloc calloc realloc free poll
recv send curl_mvsnprintf curl_maprintf curl_easy_reset ...).  Call counts need no debug
symbols, so they work on a stripped libcurl where a profile shows only addresses.  Run a
binary against another libcurl with LD_LIBRARY_PATH in the environment (valgrind passes it on).
"""
import argparse
import collections
import os
import re
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True
import instructions  # noqa: E402  (run(), FakeUpstream)

FUNCS = ["malloc", "calloc", "realloc", "free", "strdup", "poll", "recv", "send",
         "__libc_recv", "__send", "recvfrom", "sendto", "clock_gettime", "__clock_gettime",
         "vsnprintf", "__vsnprintf_internal", "curl_mvsnprintf", "curl_maprintf",
         "curl_mvaprintf", "curl_msnprintf", "curl_easy_reset", "curl_easy_setopt",
         "curl_multi_add_handle", "curl_multi_remove_handle", "curl_multi_socket_action",
         "curl_url_get", "curl_url_set", "curl_url", "curl_url_cleanup", "curl_strequal",
         "curl_strnequal", "getsockname", "getpeername", "getsockopt", "setsockopt",
         "event_add", "event_del", "pthread_mutex_lock"]


def parse(path):
    """Self instructions per object and per function, and calls per callee name."""
    names = {"ob": {}, "fl": {}, "fn": {}}
    self_ob = collections.Counter()
    self_fn = collections.Counter()
    calls = collections.Counter()
    ob = fn = None
    cob = None
    skip_next = False
    pending_call = None

    def name(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
        if not m:
            return rest
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:        # the inclusive cost of the call just announced
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    v = int(parts[1])
                    self_ob[ob] += v
                    self_fn[(ob, fn)] += v
                continue
            key, _, rest = line.partition("=")
            if key == "ob":
                ob = name("ob", rest)
            elif key == "fn":
                fn = name("fn", rest)
            elif key == "cob":
                cob = name("ob", rest)
            elif key == "cfn":
                pending_call = name("fn", rest)
            elif key == "calls":
                calls[pending_call] += int(rest.split()[0])
                skip_next = True
            elif key in ("fl", "fi", "fe", "cfi", "cfl"):
                name("fl", rest)
    return self_ob, self_fn, calls


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--fanoutd", default=os.path.join(HERE, "..", "fanoutd"))
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keep", help="keep the callgrind files in this directory")
    ap.add_argument("--func", action="append", help="function to count (repeatable)")
    a = ap.parse_args()
    tmp = a.keep or tempfile.mkdtemp(prefix="fanoutd-calls-")
    os.makedirs(tmp, exist_ok=True)
    with instructions.FakeUpstream("up") as up:
        base = max(a.conns * 50, 200)
        i0, out0 = instructions.run(a.fanoutd, up.url, base, a.conns, tmp, "short")
        i1, out1 = instructions.run(a.fanoutd, up.url, base + a.requests, a.conns, tmp, "long")
    n = a.requests
    ob0, fn0, c0 = parse(out0)
    ob1, fn1, c1 = parse(out1)
    print("user-space instructions per proxied request: %.0f (%d requests, %d connections, "
          "callgrind; files in %s)" % ((i1 - i0) / n, n, a.conns, tmp))
    print("\n| object | instructions per request |")
    print("|---|---|")
    for o in sorted(set(ob0) | set(ob1), key=lambda o: -(ob1[o] - ob0[o])):
        d = (ob1[o] - ob0[o]) / n
        if d >= 1:
            print("| %s | %.0f |" % (os.path.basename(o or "?"), d))
    print("\n| function | calls per request |")
    print("|---|---|")
    for f in (a.func or FUNCS):
        d = (c1[f] - c0[f]) / n
        if d > 0.005:
            print("| %s | %.2f |" % (f, d))
    print("\n| self instructions per request | object | function |")
    print("|---|---|---|")
    diffs = sorted(((fn1[k] - fn0.get(k, 0)) / n, k) for k in fn1)
    for d, (o, f) in reversed(diffs[-a.top:]):
        print("| %.0f | %s | %s |" % (d, os.path.basename(o or "?"), f[:80]))
    if not a.keep:
        for f in (out0, out1):
            os.unlink(f)


if __name__ == "__main__":
    main()
