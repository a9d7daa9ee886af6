"""GET /metrics: Prometheus text format 0.0.4, SPEC section 7.

A strict parser of our own checks the exposition after varied traffic
(every line parses, HELP and TYPE before each family's samples, counters end
in _total, histogram buckets cumulative with +Inf equal to _count, label
values escaped, no duplicate series); `promtool check metrics` runs too when
Debian's prometheus package is installed.  Then the numbers themselves:
counters count, buckets bucket, gauges go back to zero.
"""

import math
import re
import shutil
import subprocess
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


# ----------------------------------------------------------------------
# a strict parser of the text format (version 0.0.4)

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")
SUFFIXES = {"counter": ("",), "gauge": ("",), "untyped": ("",),
            "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count")}


class ExpositionError(AssertionError):
    pass


def _value(s, where):
    if s in ("+Inf", "Inf"):
        return math.inf
    if s == "-Inf":
        return -math.inf
    if s == "NaN":
        return math.nan
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        raise ExpositionError("%s: bad value %r" % (where, s))
    return float(s)


def _labels(s, where):
    """The inside of {...}: name="value", with only \\\\ \\" \\n escapes."""
    out = {}
    pos = 0
    while pos < len(s):
        m = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)' % LABEL).match(s, pos)
        if not m:
            raise ExpositionError("%s: bad label syntax or escape at %r" % (where, s[pos:]))
        name, raw = m.group(1), m.group(2)
        if name in out:
            raise ExpositionError("%s: label %s twice" % (where, name))
        if name.startswith("__"):
            raise ExpositionError("%s: reserved label name %s" % (where, name))
        out[name] = re.sub(r'\\(.)', lambda e: "\n" if e.group(1) == "n" else e.group(1), raw)
        pos = m.end()
    return out


def parse_exposition(text):
    """Parse and check TEXT; returns {family: {"help", "type", "samples":
    [(name, labels, value)]}}.  Raises ExpositionError on any violation."""
    if not text.endswith("\n"):
        raise ExpositionError("the exposition does not end with a newline")
    families = {}
    order = []
    current = None          # the family whose samples may follow
    seen_series = set()
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line)
        if line.strip() == "":
            continue
        if line.startswith("#"):
            m = re.fullmatch(r"# (HELP|TYPE) (%s) (.*)" % NAME, line)
            if not m:
                if re.match(r"#\s*(HELP|TYPE)\b", line):
                    raise ExpositionError("%s: malformed HELP/TYPE" % where)
                continue            # a plain comment
            kind, name, rest = m.groups()
            fam = families.get(name)
            if fam is None:
                fam = families[name] = {"help": None, "type": None, "samples": []}
                order.append(name)
            elif fam["samples"]:
                raise ExpositionError("%s: %s for %s after its samples" % (where, kind, name))
            key = kind.lower()
            if fam[key] is not None:
                raise ExpositionError("%s: second %s for %s" % (where, kind, name))
            if kind == "TYPE" and rest not in TYPES:
                raise ExpositionError("%s: unknown type %r" % (where, rest))
            if kind == "HELP":
                if not rest.strip():
                    raise ExpositionError("%s: empty HELP" % where)
                if re.search(r'\\[^\\n]', rest):
                    raise ExpositionError("%s: bad escape in HELP" % where)
            fam[key] = rest
            if current is not None and current != name and families[current]["samples"] == []:
                # a family with HELP/TYPE and no samples is allowed
                pass
            current = name
            continue
        m = re.fullmatch(r"(%s)(?:\{(.*)\})? ([^ ]+)(?: (-?\d+))?" % NAME, line)
        if not m:
            raise ExpositionError("%s: not a sample line" % where)
        sname, lab, val = m.group(1), m.group(2), m.group(3)
        labels = _labels(lab, where) if lab else {}
        value = _value(val, where)
        if current is None:
            raise ExpositionError("%s: sample before any HELP/TYPE" % where)
        fam = families[current]
        if fam["help"] is None or fam["type"] is None:
            raise ExpositionError("%s: family %s lacks %s before its samples"
                                  % (where, current, "HELP" if fam["help"] is None else "TYPE"))
        if not any(sname == current + s for s in SUFFIXES[fam["type"]]):
            raise ExpositionError("%s: sample %s does not belong to family %s (%s)"
                                  % (where, sname, current, fam["type"]))
        series = (sname, frozenset(labels.items()))
        if series in seen_series:
            raise ExpositionError("%s: duplicate series" % where)
        seen_series.add(series)
        fam["samples"].append((sname, labels, value))
    for name in order:
        fam = families[name]
        if fam["help"] is None or fam["type"] is None:
            raise ExpositionError("family %s lacks %s" % (
                name, "HELP" if fam["help"] is None else "TYPE"))
        check_family(name, fam)
    return families


def check_family(name, fam):
    t = fam["type"]
    if t == "counter":
        if not name.endswith("_total"):
            raise ExpositionError("counter %s does not end in _total" % name)
        for s, labels, v in fam["samples"]:
            if not (v >= 0 and math.isfinite(v)):
                raise ExpositionError("counter %s%r = %r" % (s, labels, v))
    elif t == "gauge":
        for s, labels, v in fam["samples"]:
            if not math.isfinite(v):
                raise ExpositionError("gauge %s%r = %r" % (s, labels, v))
    elif t == "histogram":
        check_histogram(name, fam["samples"])


def check_histogram(name, samples):
    groups = {}
    for s, labels, v in samples:
        rest = {k: x for k, x in labels.items() if k != "le"}
        g = groups.setdefault(frozenset(rest.items()),
                              {"buckets": [], "sum": None, "count": None})
        if s == name + "_bucket":
            if "le" not in labels:
                raise ExpositionError("%s_bucket%r without le" % (name, labels))
            g["buckets"].append((labels["le"], v))
        elif "le" in labels:
            raise ExpositionError("%s%r: le on a non-bucket sample" % (s, labels))
        elif s == name + "_sum":
            g["sum"] = v
        else:
            g["count"] = v
    for key, g in groups.items():
        what = "%s{%s}" % (name, ",".join("%s=%s" % kv for kv in sorted(key)))
        if not g["buckets"]:
            raise ExpositionError("%s: no buckets" % what)
        if g["sum"] is None or g["count"] is None:
            raise ExpositionError("%s: _sum or _count missing" % what)
        les = []
        for le, v in g["buckets"]:
            try:
                les.append(_value(le, what))
            except ExpositionError:
                raise ExpositionError("%s: le=%r is not a number" % (what, le))
            if v < 0 or v != int(v):
                raise ExpositionError("%s: bucket le=%s count %r" % (what, le, v))
        if g["buckets"][-1][0] != "+Inf":
            raise ExpositionError("%s: the last bucket is le=%r, not +Inf"
                                  % (what, g["buckets"][-1][0]))
        if any(b <= a for a, b in zip(les, les[1:])):
            raise ExpositionError("%s: le not strictly increasing: %r" % (what, les))
        counts = [v for _, v in g["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise ExpositionError("%s: buckets not cumulative: %r" % (what, counts))
        if counts[-1] != g["count"]:
            raise ExpositionError("%s: le=+Inf %r != _count %r" % (what, counts[-1], g["count"]))
        if g["count"] == 0 and g["sum"] != 0:
            raise ExpositionError("%s: _sum %r with _count 0" % (what, g["sum"]))
        if g["sum"] < 0 or not math.isfinite(g["sum"]):
            raise ExpositionError("%s: _sum %r" % (what, g["sum"]))


def scrape(fd):
    r = harness.http_get(fd.admin_port, "/metrics")
    if r.status != 200:
        raise AssertionError("/metrics answered %d" % r.status)
    return r


def buckets(fams, name, **labels):
    """{le: count} of histogram NAME's series with LABELS."""
    out = {}
    for s, ls, v in fams[name]["samples"]:
        if s == name + "_bucket" and {k: x for k, x in ls.items() if k != "le"} == labels:
            out[ls["le"]] = v
    return out


def sample(fams, family, sname=None, **labels):
    for s, ls, v in fams[family]["samples"]:
        if s == (sname or family) and ls == labels:
            return v
    raise AssertionError("no sample %s%r in %r" % (sname or family, labels,
                                                    fams[family]["samples"]))


def tcp_queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the TCP socket 127.0.0.1:LOCAL_PORT ->
    127.0.0.1:REMOTE_PORT from the kernel's table, or None: tx_queue is
    what it sent and the peer's kernel has not acknowledged, rx_queue what
    arrived and its process has not read yet."""
    want = ("0100007F:%04X" % local_port, "0100007F:%04X" % remote_port)
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == want and fields[3] == "01":
                tx, rx = fields[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


SPEC_FAMILIES = {
    "fanoutd_requests_total": "counter",
    "fanoutd_request_duration_seconds": "histogram",
    "fanoutd_upstream_requests_total": "counter",
    "fanoutd_cancellations_total": "counter",
    "fanoutd_cancel_latency_seconds": "histogram",
    "fanoutd_upstream_bytes_discarded_total": "counter",
    "fanoutd_connections_active": "gauge",
    "fanoutd_requests_in_flight": "gauge",
    "fanoutd_upstream_transfers_in_flight": "gauge",
    "fanoutd_config_reloads_total": "counter",
}
REASONS = ("client_closed", "deadline", "shutdown", "superseded")
OUTCOMES = ("ok", "status", "error", "timeout", "cancelled")


# ----------------------------------------------------------------------

class ParserSelfTest(harness.TestCase):
    """The parser above catches what it claims to (no daemon needed)."""

    GOOD = ('# HELP a_total A.\n# TYPE a_total counter\na_total{x="q\\"\\\\\\n"} 1\n'
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="0.1"} 1\n'
            'h_bucket{le="1"} 2\nh_bucket{le="+Inf"} 2\nh_sum 0.5\nh_count 2\n')

    def test_good(self):
        f = parse_exposition(self.GOOD)
        self.assertEqual(f["a_total"]["samples"][0][1], {"x": 'q"\\\n'})

    def test_bad(self):
        cases = {
            "no TYPE": "# HELP a_total A.\na_total 1\n",
            "no HELP": "# TYPE a_total counter\na_total 1\n",
            "counter name": "# HELP a A.\n# TYPE a counter\na 1\n",
            "foreign sample": "# HELP a_total A.\n# TYPE a_total counter\nb_total 1\n",
            "duplicate": "# HELP a_total A.\n# TYPE a_total counter\na_total 1\na_total 2\n",
            "bad escape": '# HELP a_total A.\n# TYPE a_total counter\na_total{x="\\t"} 1\n',
            "raw quote": '# HELP a_total A.\n# TYPE a_total counter\na_total{x="a"b"} 1\n',
            "not cumulative": self.GOOD.replace('h_bucket{le="1"} 2', 'h_bucket{le="1"} 0'),
            "inf != count": self.GOOD.replace("h_count 2", "h_count 3"),
            "no +Inf": self.GOOD.replace('h_bucket{le="+Inf"} 2\n', ""),
            "le order": self.GOOD.replace('le="1"', 'le="0.05"'),
            "no newline": self.GOOD[:-1],
            "garbage": self.GOOD + "what is this\n",
            "TYPE after samples": self.GOOD + "# TYPE a_total counter\n",
        }
        for what, text in cases.items():
            with self.subTest(what):
                with self.assertRaises(ExpositionError):
                    parse_exposition(text)


class MetricsTest(harness.TestCase):

    def start(self, **kw):
        self.up = self.fake("up")
        self.b = self.fake("b")
        self.t = self.fake("t")
        self.refused_port = self.refused()
        # "tight" and "dl" are about their timeouts: only requests that
        # never get an answer are sent there
        opts = dict(
            upstreams={"up": self.up, "b": self.b,
                       "gone": self.refused_port,
                       "tight": {"url": self.t.url, "timeout": "200ms"}},
            routes={"r": {"match": "/r", "upstreams": "up"},
                    "slow": {"match": "/slow", "upstreams": "up"},
                    "fan": {"match": "/fan", "mode": "all", "upstreams": "up, b"},
                    "dead": {"match": "/dead", "upstreams": "gone"},
                    "tmo": {"match": "/tmo", "upstreams": "tight"},
                    "dl": {"match": "/dl", "upstreams": "up", "deadline": "200ms"},
                    "cut": {"match": "/cut", "mode": "all", "upstreams": "up"}})
        opts.update(kw)
        return self.daemon(**opts)

    def traffic(self, fd):
        """Something of every kind; returns when all of it is counted, with
        {route: the time its one request was sent} for "dl" and "slow"."""
        sent = {}
        for i in range(7):
            self.assertEqual(fd.get("/r?body=x").status, 200)
        self.assertEqual(fd.get("/r?status=503").status, 503)
        self.assertEqual(fd.get("/fan?body=y").status, 200)
        self.assertEqual(fd.get("/nowhere").status, 404)
        self.assertEqual(fd.get("/dead").status, 502)
        self.assertEqual(fd.get("/tmo?hang=1").status, 504)
        sent["dl"] = time.monotonic()
        self.assertEqual(fd.get("/dl?hang=1").status, 504)
        # the 300 ms are a lower bound of the request's duration, by
        # construction (the upstream holds the answer that long)
        sent["slow"] = time.monotonic()
        self.assertEqual(fd.get("/slow?delay=300").status, 200)
        with fd.client() as c:
            c.request("GET", "/r?hang=1&tag=gone")
            req = self.up.wait_for_tag("gone")
            c.close()
        self.assertCancelled(self.up, req)
        fd.wait_metric("fanoutd_requests_total", lambda v: v == 1, route="r", code="499")
        return sent

    def assertOneObservation(self, fams, name, lo, hi, **labels):
        """Histogram NAME{LABELS} holds one observation, of a value known to
        lie in [LO, HI] (a lower bound by construction, an upper one
        measured by the test around it): every bucket below LO is empty,
        every bucket from HI up holds it, and _sum is the value.  Buckets
        between the two are not looked at: where the value falls there
        is the machine's speed, not fanoutd's doing."""
        d = buckets(fams, name, **labels)
        what = "%s%r with a value in [%.3f, %.3f]: %r" % (name, labels, lo, hi, d)
        self.assertEqual(d.pop("+Inf"), 1, what)
        for le, n in d.items():
            if float(le) < lo:
                self.assertEqual(n, 0, what)
            elif float(le) >= hi:
                self.assertEqual(n, 1, what)
        self.assertTrue(any(float(le) < lo for le in d), "no bucket below %r" % lo)
        s = sample(fams, name, name + "_sum", **labels)
        self.assertTrue(lo <= s <= hi, "%s: _sum %r" % (what, s))

    def test_fresh_daemon_exports_every_spec_family(self):
        fd = self.start()
        r = scrape(fd)
        ctype = r.header("content-type") or ""
        self.assertRegex(ctype, r"^text/plain; ?version=0\.0\.4(;|$)", ctype)
        fams = parse_exposition(r.body.decode("utf-8"))
        for name, t in SPEC_FAMILIES.items():
            self.assertIn(name, fams, "family %s missing" % name)
            self.assertEqual(fams[name]["type"], t, name)
        for g in ("fanoutd_connections_active", "fanoutd_requests_in_flight",
                  "fanoutd_upstream_transfers_in_flight"):
            self.assertEqual(sample(fams, g), 0, g)
        self.assertEqual(sample(fams, "fanoutd_upstream_bytes_discarded_total"), 0)
        for res in ("ok", "error"):
            self.assertEqual(sample(fams, "fanoutd_config_reloads_total", result=res), 0)
        for reason in REASONS:
            self.assertEqual(sample(fams, "fanoutd_cancellations_total", reason=reason), 0)
        # An unlabelled histogram is exported from the start (all zero), as
        # the cancellation counters are, so rate() and histogram_quantile()
        # work before the first cancellation.
        self.assertEqual(sample(fams, "fanoutd_cancel_latency_seconds",
                                "fanoutd_cancel_latency_seconds_count"), 0,
                         "fanoutd_cancel_latency_seconds has no series before "
                         "the first cancellation")

    def test_exposition_is_valid_after_varied_traffic(self):
        fd = self.start()
        self.traffic(fd)
        fd.reload("ok")
        fd.server_opts["nonsense"] = "1"
        fd.reload("error")
        text = scrape(fd).body.decode("utf-8")
        fams = parse_exposition(text)
        for name, t in SPEC_FAMILIES.items():
            self.assertEqual(fams.get(name, {}).get("type"), t, name)
        # label sets are the ones SPEC section 7 names
        for s, ls, v in fams["fanoutd_requests_total"]["samples"]:
            self.assertEqual(set(ls), {"route", "code"}, (s, ls))
            self.assertRegex(ls["code"], r"^[1-5]\d\d$")
        for s, ls, v in fams["fanoutd_upstream_requests_total"]["samples"]:
            self.assertEqual(set(ls), {"upstream", "outcome"}, (s, ls))
            self.assertIn(ls["outcome"], OUTCOMES, (s, ls))
        for s, ls, v in fams["fanoutd_cancellations_total"]["samples"]:
            self.assertEqual(set(ls), {"reason"})
            self.assertIn(ls["reason"], REASONS)
        for s, ls, v in fams["fanoutd_request_duration_seconds"]["samples"]:
            self.assertEqual(set(ls) - {"le"}, {"route"}, (s, ls))
        for s, ls, v in fams["fanoutd_cancel_latency_seconds"]["samples"]:
            self.assertEqual(set(ls) - {"le"}, set(), (s, ls))
        self.promtool(text)

    def promtool(self, text):
        exe = shutil.which("promtool")
        if exe is None:
            print("SKIP (part): promtool not installed (apt-get install prometheus);"
                  " only the parser of this file checked the format")
            return
        p = subprocess.run([exe, "check", "metrics"], input=text.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(p.returncode, 0, "promtool check metrics:\n%s"
                         % p.stdout.decode("utf-8", "replace"))

    def test_counters_and_histograms_count(self):
        fd = self.start()
        sent = self.traffic(fd)
        fams = parse_exposition(scrape(fd).body.decode("utf-8"))
        scraped = time.monotonic()
        req = lambda route, code: sample(fams, "fanoutd_requests_total",
                                         route=route, code=str(code))
        ups = lambda u, o: sample(fams, "fanoutd_upstream_requests_total",
                                  upstream=u, outcome=o)
        self.assertEqual(req("r", 200), 7)
        self.assertEqual(req("r", 503), 1)
        self.assertEqual(req("r", 499), 1)
        self.assertEqual(req("fan", 200), 1)
        self.assertEqual(req("dead", 502), 1)
        self.assertEqual(req("tmo", 504), 1)
        self.assertEqual(req("dl", 504), 1)
        self.assertEqual(req("slow", 200), 1)
        self.assertEqual(sum(v for s, ls, v in fams["fanoutd_requests_total"]["samples"]
                             if ls["code"] == "404"), 1)
        # up: 7 + slow 1 + fan 1 ok; 1 status; client close and deadline:
        # cancelled; "tight" timed out
        self.assertEqual(ups("up", "ok"), 9)
        self.assertEqual(ups("up", "status"), 1)
        self.assertEqual(ups("up", "cancelled"), 2)
        self.assertEqual(ups("b", "ok"), 1)
        self.assertEqual(ups("gone", "error"), 1)
        self.assertEqual(ups("tight", "timeout"), 1)
        c = lambda reason: sample(fams, "fanoutd_cancellations_total", reason=reason)
        self.assertEqual((c("client_closed"), c("deadline"), c("shutdown"),
                          c("superseded")), (1, 1, 0, 0))
        # every counted cancellation has its latency observed (how fast is
        # the benchmark's business: bench/cancel_latency.py)
        cl = buckets(fams, "fanoutd_cancel_latency_seconds")
        self.assertEqual(cl.get("+Inf"), 2, cl)
        self.assertEqual(sample(fams, "fanoutd_cancel_latency_seconds",
                                "fanoutd_cancel_latency_seconds_count"), 2)
        # route r: 7 + 1 (503) + 1 (499)
        d = buckets(fams, "fanoutd_request_duration_seconds", route="r")
        self.assertEqual(d["+Inf"], 9)
        self.assertEqual(sample(fams, "fanoutd_request_duration_seconds",
                                "fanoutd_request_duration_seconds_count", route="r"), 9)
        # One request held 300 ms at the upstream: 300 ms or more, and no
        # more than the time from its send to the scrape that showed it.
        self.assertOneObservation(fams, "fanoutd_request_duration_seconds",
                                  0.3, scraped - sent["slow"], route="slow")
        # The deadline route's request was cut at its 200 ms deadline (the
        # deadline's own timer may round a few ms: 10% off the bound).
        self.assertOneObservation(fams, "fanoutd_request_duration_seconds",
                                  0.18, scraped - sent["dl"], route="dl")

    def tighten(self, fd, *names):
        """Give upstreams NAMES the 200 ms timeout only now: the requests
        that warmed their connections up had to succeed, and a timeout
        that short is not what a success may be held to on a slow machine.
        A reload keeps the workers' connection pools."""
        for n in names:
            fd.upstreams[n] = dict(fd.upstreams[n], timeout="200ms")
        fd.reload("ok")

    def test_timeout_on_a_reused_upstream_connection_is_a_timeout(self):
        # The whole-transfer timeout hits on a kept-alive upstream
        # connection, where no connect happened in this transfer: still a
        # timeout (504, outcome timeout), not a connect failure (502).
        fd = self.start()
        fd.upstreams["tight"] = {"url": self.t.url}
        fd.reload("ok")
        # One client connection for both: it stays on one worker, whose
        # curl pool holds the upstream connection (each worker has its own).
        c = fd.client()
        self.addCleanup(c.__exit__)
        self.assertEqual(c.get("/tmo?body=warm").status, 200)
        self.t.wait_requests(1)
        self.tighten(fd, "tight")
        rid = "reused-timeout-1"
        r = c.get("/tmo?hang=1&tag=rt", [("X-Request-Id", rid)])
        req = self.t.wait_for_tag("rt")
        self.assertEqual(req.conn, self.t.requests[0].conn,
                         "not a reused connection: the test proves nothing")
        e = fd.wait_access_log(request_id=rid)
        self.assertEqual([u.get("error") for u in e["upstreams"]], ["timeout"], e)
        self.assertErrorJSON(r, 504)
        m = fd.metrics()
        self.assertEqual(m.get("fanoutd_upstream_requests_total",
                               upstream="tight", outcome="timeout"), 1)
        self.assertEqual(m.get("fanoutd_upstream_requests_total",
                               upstream="tight", outcome="error"), 0)

    def test_timeout_on_a_reused_connection_is_not_resent_elsewhere(self):
        # proxy mode moves to the next upstream only when nothing reached
        # the first; a POST that did reach it and then timed out on a reused
        # connection must not be sent a second time to another upstream
        t2 = self.fake("t2")
        fd = self.start()
        fd.upstreams["t1"] = {"url": self.t.url}
        fd.upstreams["t2"] = {"url": t2.url}
        fd.routes["pair"] = {"match": "/pair", "upstreams": "t1, t2"}
        fd.reload("ok")
        for i in range(2):      # round robin: one pooled connection to each
            self.assertEqual(fd.get("/pair?body=warm").status, 200)
        self.t.wait_requests(1)
        t2.wait_requests(1)
        self.tighten(fd, "t1", "t2")
        with fd.client() as c:
            c.request("POST", "/pair?hang=1&tag=once", body="pay 100")
            r = c.read_response()
        got = [f.name for f in (self.t, t2)
               if any(q.tag == "once" for q in f.requests)]
        self.assertEqual(len(got), 1, "one POST reached %r" % got)
        self.assertErrorJSON(r, 504)

    def test_gauges_follow_the_work(self):
        fd = self.start()
        with fd.client() as c:
            c.request("GET", "/fan?hang=1&tag=g")
            self.up.wait_for_tag("g")
            self.b.wait_for_tag("g")
            m = fd.metrics()
            self.assertEqual(m.get("fanoutd_connections_active"), 1)
            self.assertEqual(m.get("fanoutd_requests_in_flight"), 1)
            self.assertEqual(m.get("fanoutd_upstream_transfers_in_flight"), 2)
            c.close()
        for g in ("fanoutd_requests_in_flight", "fanoutd_upstream_transfers_in_flight",
                  "fanoutd_connections_active"):
            fd.wait_metric(g, lambda v: v == 0)
        self.assertEqual(fd.metric("fanoutd_cancellations_total", reason="client_closed"), 1)

    def test_bytes_discarded_counts_a_cut_response(self):
        # 5000 body bytes arrive at once, the rest never; once fanoutd has
        # read them, the client leaves and the cancel throws away what had
        # arrived. Mode all collects the legs (mode proxy would have
        # streamed those bytes to the client already).
        fd = self.start()
        with fd.client() as c:
            c.request("GET", "/cut?size=100000&partial=5000&tag=p")
            req = self.up.wait_for_tag("p")

            def read_by_fanoutd():
                # all the upstream sent has reached fanoutd's socket, and
                # fanoutd has read it (curl hands what it reads to the
                # transfer before it returns to the loop)
                if req.partial_sent is None:
                    return False
                up = tcp_queues(self.up.port, req.conn.peer[1])
                down = tcp_queues(req.conn.peer[1], self.up.port)
                return up is not None and down is not None and \
                    up[0] == 0 and down[1] == 0
            harness.wait_until(read_by_fanoutd, what="fanoutd to read the 5000 bytes")
            self.assertEqual(fd.metric("fanoutd_upstream_bytes_discarded_total"), 0)
            c.close()
        self.assertCancelled(self.up, req)
        v = fd.wait_metric("fanoutd_upstream_bytes_discarded_total", lambda v: v > 0)
        self.assertGreaterEqual(v, 5000)
        self.assertLess(v, 100000)


if __name__ == "__main__":
    harness.main()
