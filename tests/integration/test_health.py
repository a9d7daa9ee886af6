"""Issue 21, servers and their health: an upstream with several servers
(servers = URL [weight=N], ...), weighted round robin and least_request,
passive health (eject_after failures in a row eject a server for
eject_time, doubling on each repeat, never more than max_ejected of them),
active health (GET health_check every health_interval, health_fall fails
take a server out, health_rise passes bring it back), legs cancelled for a
reason of the request never counting against a server, what a reload keeps,
and the access log's server of each leg.

The contract is ../shared/SPEC.md sections 2, 4a, 7 and the issue's design.
Every condition is reached by construction: a failure is a fake's 503, an
ejection is waited for on fanoutd_upstream_ejections_total, a server that
is out on fanoutd_upstream_server_up.  Time is measured only where it is
the subject (an ejection lasts at least eject_time, the second at least
twice that), and only as a lower bound: a slow machine is late, never
early.  The health checks' own timeout is a minute, so that a check never
fails for slowness under valgrind."""

import itertools
import time

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

UP = "fanoutd_upstream_server_up"
EJECTIONS = "fanoutd_upstream_ejections_total"
WASTED_S = "fanoutd_upstream_wasted_seconds_total"
UREQ = "fanoutd_upstream_requests_total"

_tags = itertools.count(1)


def servers(*items):
    """The value of 'servers' for ITEMS: a FakeUpstream, or (fake, weight),
    or (fake, weight, "/") to write its URL with a trailing slash."""
    out = []
    for it in items:
        if not isinstance(it, tuple):
            it = (it,)
        url = it[0].url + (it[2] if len(it) > 2 else "")
        out.append(url if len(it) < 2 or it[1] is None
                   else "%s weight=%d" % (url, it[1]))
    return ", ".join(out)


def new_tag(prefix="t"):
    return "%s%d" % (prefix, next(_tags))


class ServersCase(harness.TestCase):
    """One daemon per test: a server's health is the state under test, and
    no test may inherit another's."""

    def server_up(self, fd, upstream, fake, m=None):
        """fanoutd_upstream_server_up of FAKE in UPSTREAM; None if absent."""
        m = m if m is not None else fd.metrics()
        return m.get(UP, None, upstream=upstream, server=fake.url)

    def ejections(self, fd, upstream, fake, m=None):
        m = m if m is not None else fd.metrics()
        return m.get(EJECTIONS, None, upstream=upstream, server=fake.url)

    def wait_up(self, fd, upstream, fake, value):
        return fd.wait_metric(UP, lambda v: v == value, upstream=upstream,
                              server=fake.url)

    def wait_ejections(self, fd, upstream, fake, value):
        return fd.wait_metric(EJECTIONS, lambda v: v == value,
                              upstream=upstream, server=fake.url)

    def send(self, fd, path, query="", headers=None):
        """One GET on a new connection; returns (response, the name of the
        fake that answered it, from its X-Upstream header, or None)."""
        t = new_tag()
        r = fd.get("%s?tag=%s%s" % (path, t, "&" + query if query else ""),
                   headers)
        return r, r.header("x-upstream")

    def send_until(self, fd, path, fake, n, query="", after_each=None):
        """GETs with QUERY until N of them were answered by FAKE (round
        robin brings them there); AFTER_EACH(k) runs after FAKE's k-th.
        Returns the responses FAKE gave."""
        got = []
        for _ in range(4 * n + 8):
            r, who = self.send(fd, path, query)
            if who == fake.name:
                got.append(r)
                if after_each is not None:
                    after_each(len(got))
                if len(got) == n:
                    return got
        self.fail("only %d of %d requests reached %s" % (len(got), n, fake.name))


# ----------------------------------------------------------------------
class PassiveHealthTest(ServersCase):

    def two(self, eject_after="5", eject_time="10m", **extra):
        a, b = self.fake("pa"), self.fake("pb")
        u = {"servers": servers(a, b), "eject_after": eject_after,
             "eject_time": eject_time}
        u.update(extra)
        # eject_time_max may not be below eject_time (default 5m)
        u.setdefault("eject_time_max", "10m")
        fd = self.daemon(upstreams={"u": u},
                         routes={"p": {"match": "/p", "upstreams": "u"}})
        return fd, a, b

    def test_five_failures_in_a_row_eject_and_the_legs_go_to_the_other(self):
        fd, a, b = self.two("5", "10m", max_ejected="50%")
        m = fd.metrics()
        for f in (a, b):
            self.assertEqual(self.server_up(fd, "u", f, m), 1, f.url)
            self.assertEqual(self.ejections(fd, "u", f, m), 0, f.url)

        def not_yet(k):
            if k < 5:
                m = fd.metrics()
                self.assertEqual((self.ejections(fd, "u", a, m),
                                  self.server_up(fd, "u", a, m)), (0, 1),
                                 "ejected after %d failures of 5" % k)
        got = self.send_until(fd, "/p/x", a, 5, "pa.status=503", not_yet)
        # every failure is answered as it was (proxy mode: verbatim)
        self.assertEqual([r.status for r in got], [503] * 5)
        self.wait_ejections(fd, "u", a, 1)
        self.assertEqual(self.server_up(fd, "u", a), 0)
        self.assertEqual((self.server_up(fd, "u", b), self.ejections(fd, "u", b)),
                         (1, 0))
        n_a = len(a.requests)
        for _ in range(6):
            r, who = self.send(fd, "/p/x", "pa.status=503")
            self.assertEqual((r.status, who), (200, "pb"), r)
        self.assertEqual(len(a.requests), n_a, "a leg went to the ejected server")
        self.assertEqual(self.ejections(fd, "u", a), 1)

    def test_a_success_ends_the_run_of_failures(self):
        fd, a, b = self.two("5", "10m")
        self.send_until(fd, "/p/x", a, 4, "pa.status=503")
        ok = self.send_until(fd, "/p/x", a, 1)
        self.assertEqual(ok[0].status, 200, ok)
        self.send_until(fd, "/p/x", a, 4, "pa.status=503")
        # 8 failures, never 5 in a row
        m = fd.metrics()
        self.assertEqual((self.ejections(fd, "u", a, m), self.server_up(fd, "u", a, m)),
                         (0, 1))
        # a 4xx is a success too: the answer is the client's problem
        self.send_until(fd, "/p/x", a, 1, "pa.status=404")
        self.send_until(fd, "/p/x", a, 4, "pa.status=500")
        m = fd.metrics()
        self.assertEqual(self.ejections(fd, "u", a, m), 0,
                         "a 404 did not end the run of failures")
        # and the fifth in a row ejects
        self.send_until(fd, "/p/x", a, 1, "pa.status=502")
        self.wait_ejections(fd, "u", a, 1)

    def test_connect_failures_eject(self):
        # a server that refuses connections: in proxy mode the request goes
        # on to the other server (a retry), and the refusals eject it
        a = self.refused()
        b = self.fake("pb")
        fd = self.daemon(upstreams={"u": {"servers": "%s, %s" % (a.url, b.url),
                                          "eject_after": "2", "eject_time": "10m",
                                          "eject_time_max": "10m"}},
                         routes={"p": {"match": "/p", "upstreams": "u"}})
        for _ in range(8):
            r, who = self.send(fd, "/p/x")
            self.assertEqual((r.status, who), (200, "pb"), r)
        m = fd.metrics()
        self.assertEqual((m.get(EJECTIONS, None, upstream="u", server=a.url),
                          m.get(UP, None, upstream="u", server=a.url)), (1, 0))
        # each refusal was retried on b: an extra attempt each
        self.assertEqual(m.get("fanoutd_extra_attempts_total", route="p", kind="retry",
                               outcome="sent"), 2, m)

    def test_one_server_ejected_is_a_circuit_breaker(self):
        s = self.fake("ps")
        fd = self.daemon(
            upstreams={"one": {"servers": servers(s), "eject_after": "5",
                               "eject_time": "10m", "eject_time_max": "10m",
                               "max_ejected": "50%"}},
            routes={"p": {"match": "/p", "upstreams": "one"},
                    "all": {"match": "/all", "mode": "all", "upstreams": "one"}})
        for k in range(1, 6):
            r, who = self.send(fd, "/p/x", "status=503")
            self.assertEqual((r.status, who), (503, "ps"), r)
            if k < 5:
                self.assertEqual(self.ejections(fd, "one", s), 0, k)
        self.wait_ejections(fd, "one", s, 1)
        self.assertEqual(self.server_up(fd, "one", s), 0)
        m0 = fd.metrics()
        n = len(s.requests)
        rid = "circuit-" + new_tag()
        r = fd.get("/p/x?tag=open", [("X-Request-Id", rid)])
        doc = self.assertErrorJSON(r, 503)
        self.assertEqual(doc["error"], "no_healthy_upstream", doc)
        e = fd.wait_access_log(request_id=rid)
        self.assertEqual(e["status"], 503, e)
        self.assertEqual(len(e["upstreams"]), 1, e)
        leg = e["upstreams"][0]
        self.assertEqual((leg.get("name"), leg.get("error")), ("one", "unavailable"), e)
        self.assertIn("server", leg, e)
        self.assertIsNone(leg["server"], e)
        # mode all: the leg fails at once, in the envelope
        r = fd.get("/all/x?tag=open")
        env = self.assertEnvelope(r, 502, ["one"])
        self.assertLegError(env, "one", "unavailable", "no available server")
        self.assertEqual(len(s.requests), n, "the ejected server was asked")
        fd.wait_metric(UREQ, lambda v: v == m0.get(UREQ, upstream="one",
                                                   outcome="unavailable") + 2,
                       upstream="one", outcome="unavailable")

    def test_max_ejected_keeps_one_of_two(self):
        fd, a, b = self.two("2", "10m", max_ejected="50%")
        # every answer fails; one server is ejected, the other cannot be
        for _ in range(4):
            self.send(fd, "/p/x", "status=503")
        harness.wait_until(lambda: fd.metrics().sum(EJECTIONS, upstream="u") >= 1,
                           what="an ejection")
        self.assertEqual(fd.metrics().sum(EJECTIONS, upstream="u"), 1,
                         "both servers of two ejected with max_ejected = 50%")
        m = fd.metrics()
        out = [f for f in (a, b) if self.server_up(fd, "u", f, m) == 0]
        self.assertEqual(len(out), 1, m)
        left = b if out[0] is a else a
        n_out = len(out[0].requests)
        for _ in range(8):
            r, who = self.send(fd, "/p/x", "status=503")
            self.assertEqual((r.status, who), (503, left.name), r)
        self.assertEqual(len(out[0].requests), n_out)
        m = fd.metrics()
        self.assertEqual(m.sum(EJECTIONS, upstream="u"), 1,
                         "more than max_ejected = 50% of 2 servers ejected")
        self.assertEqual((self.server_up(fd, "u", left, m), self.ejections(fd, "u", left, m)),
                         (1, 0))

    def watch_ejection(self, fd, a, b, t_from, least):
        """Server A of upstream u was ejected at a moment after T_FROM:
        poll server_up until A is back (bounded).  Every read that ended
        before T_FROM + LEAST must say 0; between reads a request goes out,
        and one answered between two reads of 0 must have gone to B.
        Returns (reads of 0, requests so checked)."""
        bad = []
        box = {"zeros": 0, "checked": 0, "first": None}

        def back():
            v = self.server_up(fd, "u", a)
            t = time.monotonic()
            if box["first"] is None:
                box["first"] = t
            if v != 0 and t < t_from + least:
                bad.append("server_up %r %.0f ms after the ejection began "
                           "(at the latest), before %.0f ms"
                           % (v, (t - t_from) * 1000, least * 1000))
            if v != 0:
                return True
            box["zeros"] += 1
            n_a = len(a.requests)
            r, who = self.send(fd, "/p/x")
            if self.server_up(fd, "u", a) == 0:
                box["checked"] += 1
                if who != b.name or len(a.requests) != n_a:
                    bad.append("a request went to %s while it was ejected: %r"
                               % (who, r))
            return False
        harness.wait_until(back, what="server %s back after its ejection" % a.url)
        self.assertEqual(bad, [])
        if box["zeros"] == 0:
            # the machine was too slow to see it out; then it must at
            # least have taken LEAST to look
            self.assertGreaterEqual(box["first"], t_from + least,
                                    "server_up never 0 after the ejection")
        return box["zeros"], box["checked"]

    def test_ejection_ends_after_eject_time_and_doubles_on_repeat(self):
        fd, a, b = self.two("2", "300ms", eject_time_max="1m")
        t_from = time.monotonic()
        self.send_until(fd, "/p/x", a, 2, "pa.status=503")
        self.wait_ejections(fd, "u", a, 1)
        self.watch_ejection(fd, a, b, t_from, 0.3)
        # back: it takes legs again
        n_a = len(a.requests)
        for _ in range(4):
            r, _ = self.send(fd, "/p/x")
            self.assertEqual(r.status, 200, r)
        self.assertGreater(len(a.requests), n_a, "no leg to the server once back")
        self.assertEqual(self.ejections(fd, "u", a), 1)
        # a second ejection right after: twice eject_time at least
        t_from = time.monotonic()
        for _ in range(20):
            self.send(fd, "/p/x", "pa.status=503")
            if self.ejections(fd, "u", a) == 2:
                break
        self.assertEqual(self.ejections(fd, "u", a), 2)
        self.watch_ejection(fd, a, b, t_from, 0.6)
        self.assertEqual(self.ejections(fd, "u", a), 2)


# ----------------------------------------------------------------------
class ActiveHealthTest(ServersCase):

    def start(self, fall="2", rise="2", **extra):
        a, b = self.fake("ha"), self.fake("hb")
        u = {"servers": servers(a, b), "eject_after": "0",
             "health_check": "/health", "health_interval": "50ms",
             "health_timeout": "1m", "health_fall": fall, "health_rise": rise}
        u.update(extra)
        fd = self.daemon(upstreams={"u": u},
                         routes={"p": {"match": "/p", "upstreams": "u"}})
        return fd, a, b

    def checks(self, fake, status):
        return [q for q in fake.requests_to("/health") if q.status == status]

    def test_checks_take_a_server_out_and_bring_it_back(self):
        fd, a, b = self.start("2", "2")
        # checks are real GET /health at each server, with its Host
        for f in (a, b):
            f.wait_for(lambda f=f: len(self.checks(f, 200)) >= 2,
                       what="two passing checks at %s" % f.name)
            q = f.requests_to("/health")[0]
            self.assertEqual(q.method, "GET", q)
            self.assertEqual(q.target, "/health", q)
            self.assertEqual(q.header("host"), "127.0.0.1:%d" % f.port, q.headers)
            self.assertEqual(q.header("user-agent"), "fanoutd-health-check", q.headers)
        m = fd.metrics()
        self.assertEqual((self.server_up(fd, "u", a, m), self.server_up(fd, "u", b, m)),
                         (1, 1))
        # a's checks fail from now on
        a.set_defaults("status=503", path="/health")
        self.wait_up(fd, "u", a, 0)
        self.assertGreaterEqual(len(self.checks(a, 503)), 2,
                                "out after fewer than health_fall = 2 failed checks")
        self.assertEqual(self.server_up(fd, "u", b), 1)
        n_a = len([q for q in a.requests if q.path != "/health"])
        for _ in range(6):
            r, who = self.send(fd, "/p/x")
            self.assertEqual((r.status, who), (200, "hb"), r)
        self.assertEqual(len([q for q in a.requests if q.path != "/health"]), n_a,
                         "a leg went to a server its checks took out")
        # and they pass again
        passes = len(self.checks(a, 200))
        a.set_defaults({}, path="/health")
        self.wait_up(fd, "u", a, 1)
        self.assertGreaterEqual(len(self.checks(a, 200)) - passes, 2,
                                "back after fewer than health_rise = 2 passed checks")
        seen = set()
        for _ in range(4):
            r, who = self.send(fd, "/p/x")
            self.assertEqual(r.status, 200, r)
            seen.add(who)
        self.assertEqual(seen, {"ha", "hb"})
        # an active health check takes nobody out by ejection
        m = fd.metrics()
        self.assertEqual((self.ejections(fd, "u", a, m), self.ejections(fd, "u", b, m)),
                         (0, 0))

    def test_a_passing_check_ends_an_ejection_early(self):
        # design (choice, as Envoy): a passing active check ends an ejection
        fd, a, b = self.start("2", "1", eject_after="1", eject_time="10m",
                                eject_time_max="10m")
        self.send_until(fd, "/p/x", a, 1, "ha.status=503")
        self.wait_ejections(fd, "u", a, 1)
        self.wait_up(fd, "u", a, 1)     # long before ten minutes
        self.assertEqual(self.ejections(fd, "u", a), 1)


# ----------------------------------------------------------------------
class CancelledLegsTest(ServersCase):

    def test_abandoned_requests_never_eject_a_slow_server(self):
        # eject_after = 1: a single cancelled leg counted as a failure
        # would take the only server out (and the next request gets 503)
        s = self.fake("slow")
        fd = self.daemon(
            upstreams={"u": {"servers": servers(s), "eject_after": "1",
                             "eject_time": "10m", "eject_time_max": "10m"}},
            routes={"p": {"match": "/p", "upstreams": "u"},
                    "dl": {"match": "/dl", "upstreams": "u", "deadline": "200ms"}})
        m0 = fd.metrics()
        for batch in range(10):
            clients, tags = [], []
            for _ in range(10):
                c = fd.client()
                self.addCleanup(c.__exit__)
                t = new_tag("h")
                c.request("GET", "/p/x?hold=1&tag=" + t)
                clients.append(c)
                tags.append(t)
            held = [s.wait_for_tag(t) for t in tags]
            for c in clients:
                c.close()
            for q in held:
                self.assertCancelled(s, q, "abandoned leg")
        fd.wait_metric(UREQ, lambda v: v == m0.get(UREQ, upstream="u",
                                                   outcome="cancelled") + 100,
                       upstream="u", outcome="cancelled")
        # and three cut by the route's deadline
        for _ in range(3):
            r, _ = self.send(fd, "/dl/x", "hang=1")
            self.assertErrorJSON(r, 504)
        m = fd.metrics()
        self.assertEqual((self.ejections(fd, "u", s, m), self.server_up(fd, "u", s, m)),
                         (0, 1), "cancelled legs counted against their server")
        self.assertGreater(m.get(WASTED_S, upstream="u", reason="client_closed"),
                           m0.get(WASTED_S, upstream="u", reason="client_closed"))
        fd.wait_metric(WASTED_S, lambda v: v > m0.get(WASTED_S, upstream="u",
                                                      reason="deadline"),
                       upstream="u", reason="deadline")
        r, who = self.send(fd, "/p/x", "body=still")
        self.assertEqual((r.status, r.body, who), (200, b"still", "slow"), r)


# ----------------------------------------------------------------------
class BalanceTest(ServersCase):

    def test_weighted_round_robin_is_exact_and_smooth(self):
        a, b = self.fake("wa"), self.fake("wb")
        fd = self.daemon(upstreams={"u": {"servers": servers((a, 3), (b, 1))}},
                         routes={"p": {"match": "/p", "upstreams": "u"}})
        seq = []
        for _ in range(40):
            r, who = self.send(fd, "/p/x")
            self.assertEqual(r.status, 200, r)
            seq.append(who)
        self.assertEqual((seq.count("wa"), seq.count("wb")), (30, 10), seq)
        run = longest = 0
        for who in seq:
            run = run + 1 if who == "wa" else 0
            longest = max(longest, run)
        self.assertLessEqual(longest, 3, "not smooth: %d in a row on a: %r"
                             % (longest, seq))
        self.assertNotIn(("wb", "wb"), list(zip(seq, seq[1:])), seq)

    def test_equal_weights_alternate(self):
        a, b, c = self.fake("ea"), self.fake("eb"), self.fake("ec")
        fd = self.daemon(upstreams={"u": {"servers": servers(a, b, c)}},
                         routes={"p": {"match": "/p", "upstreams": "u"}})
        seq = [self.send(fd, "/p/x")[1] for _ in range(9)]
        for i in range(0, 9, 3):
            self.assertEqual(sorted(seq[i:i + 3]), ["ea", "eb", "ec"], seq)

    def test_least_request_avoids_the_busy_server(self):
        a, b = self.fake("la"), self.fake("lb")
        fd = self.daemon(
            upstreams={"u": {"servers": servers(a, b), "balance": "least_request",
                             "eject_after": "0", "health_check": "/health",
                             "health_interval": "50ms", "health_timeout": "1m",
                             "health_fall": "1", "health_rise": "1"}},
            routes={"p": {"match": "/p", "upstreams": "u"}})
        # b out (its checks fail) while five requests are put on a
        b.set_defaults("status=503", path="/health")
        self.wait_up(fd, "u", b, 0)
        clients, held = [], []
        for _ in range(5):
            c = fd.client()
            self.addCleanup(c.__exit__)
            t = new_tag("busy")
            c.request("GET", "/p/x?hold=1&tag=" + t)
            clients.append(c)
            held.append(a.wait_for_tag(t))
        b.set_defaults({}, path="/health")
        self.wait_up(fd, "u", b, 1)
        # a has five in flight, b none: every request goes to b
        for _ in range(10):
            r, who = self.send(fd, "/p/x")
            self.assertEqual((r.status, who), (200, "lb"), r)
        a.release_all()
        for c in clients:
            r = c.read_response()
            self.assertEqual((r.status, r.header("x-upstream")), (200, "la"), r)


# ----------------------------------------------------------------------
class ReloadTest(ServersCase):

    def test_reload_keeps_an_ejection_and_a_server_dropped_comes_back_fresh(self):
        a, b = self.fake("ra"), self.fake("rb")
        u = {"servers": servers(a, b), "eject_after": "1", "eject_time": "10m",
             "eject_time_max": "10m"}
        fd = self.daemon(upstreams={"u": dict(u)},
                         routes={"p": {"match": "/p", "upstreams": "u"}})
        self.send_until(fd, "/p/x", a, 1, "ra.status=503")
        self.wait_ejections(fd, "u", a, 1)
        self.assertEqual(self.server_up(fd, "u", a), 0)

        def quiet():
            fd.wait_metric("fanoutd_requests_in_flight", lambda v: v == 0)
            fd.wait_metric("fanoutd_upstream_transfers_in_flight", lambda v: v == 0)

        # a reload that keeps both servers (another route added)
        quiet()
        fd.routes["q"] = {"match": "/q", "upstreams": "u"}
        fd.reload("ok")
        m = fd.metrics()
        self.assertEqual((self.server_up(fd, "u", a, m), self.ejections(fd, "u", a, m)),
                         (0, 1), "the reload forgot the ejection")
        n_a = len(a.requests)
        for path in ("/p/x", "/q/x", "/p/x", "/q/x"):
            r, who = self.send(fd, path)
            self.assertEqual((r.status, who), (200, "rb"), r)
        self.assertEqual(len(a.requests), n_a)
        # a reload that drops a: its series go
        quiet()
        fd.upstreams["u"] = dict(u, servers=servers(b))
        fd.reload("ok")
        m = fd.metrics()
        for name in (UP, EJECTIONS):
            left = [k for k in m if k[0] == name and ("server", a.url) in k[1]]
            self.assertEqual(left, [], "series of a dropped server: %r" % left)
        self.assertEqual(self.server_up(fd, "u", b, m), 1)
        # and one that adds it back: a fresh server
        quiet()
        fd.upstreams["u"] = dict(u)
        fd.reload("ok")
        m = fd.metrics()
        self.assertEqual((self.server_up(fd, "u", a, m), self.ejections(fd, "u", a, m)),
                         (1, 0), "a server added back did not start fresh")
        seen = {self.send(fd, "/p/x")[1] for _ in range(4)}
        self.assertEqual(seen, {"ra", "rb"})


# ----------------------------------------------------------------------
class AccessLogTest(ServersCase):

    def test_each_leg_names_its_server(self):
        a, b, c = self.fake("sa"), self.fake("sb"), self.fake("sc")
        fd = self.daemon(
            # a written with a trailing slash: the name is without it
            upstreams={"u": {"servers": servers((a, None, "/"), b)},
                       "v": {"servers": servers(c)}},
            routes={"p": {"match": "/p", "upstreams": "u"},
                    "all": {"match": "/all", "mode": "all", "upstreams": ["u", "v"]}})
        m = fd.metrics()
        for f, up in ((a, "u"), (b, "u"), (c, "v")):
            self.assertEqual((self.server_up(fd, up, f, m), self.ejections(fd, up, f, m)),
                             (1, 0), "%s from the start" % f.url)
        self.assertFalse([k for k in m if ("server", a.url + "/") in k[1]],
                         "a server named with its trailing slash")
        byname = {"sa": a, "sb": b, "sc": c}
        for _ in range(2):
            rid = new_tag("log-")
            r, who = self.send(fd, "/p/x", headers=[("X-Request-Id", rid)])
            self.assertEqual(r.status, 200, r)
            e = fd.wait_access_log(request_id=rid)
            self.assertEqual([u.get("server") for u in e["upstreams"]],
                             [byname[who].url], e)
        rid = new_tag("log-")
        r = fd.get("/all/x", [("X-Request-Id", rid)])
        env = self.assertEnvelope(r, 200, ["u", "v"])
        e = fd.wait_access_log(request_id=rid)
        legs = {u["name"]: u for u in e["upstreams"]}
        self.assertIn(legs["u"].get("server"), (a.url, b.url), e)
        self.assertEqual(legs["v"].get("server"), c.url, e)
        self.assertTrue(env)


# ----------------------------------------------------------------------
class ConfigTest(ServersCase):
    """The new keys at -t: what is accepted, and the design's messages,
    FILE:LINE first (the line of the key at fault).  Durations take a unit
    (SPEC 2: ms, s, m, h), so the design's "1d" is written 24h."""

    def check(self, upstream=None, route=None):
        """fanoutd -t on a configuration with upstream u (URL of a fake
        unless UPSTREAM says otherwise) and route r; returns (completed
        process, config path, config text)."""
        fd = self.daemon(start=False,
                         upstreams={"u": upstream or {"url": "http://127.0.0.1:1"}},
                         routes={"r": dict({"match": "/", "upstreams": "u"},
                                           **(route or {}))})
        fd.port, fd.admin_port = harness.free_port(), harness.free_port()
        fd.write_config()
        with open(fd.config_path) as f:
            text = f.read()
        return harness.run_cli(["-t", "-c", fd.config_path]), fd.config_path, text

    def assertConfigError(self, message, key, upstream=None, route=None):
        p, path, text = self.check(upstream, route)
        self.assertEqual(p.returncode, 1, p)
        line = next(i for i, l in enumerate(text.splitlines(), 1)
                    if l.startswith(key + " ="))
        self.assertIn("%s:%d: %s" % (path, line, message), p.stderr, text)

    def test_every_new_key_accepted(self):
        p, path, text = self.check(
            {"servers": "http://127.0.0.1:1 weight=256, http://127.0.0.1:2/, "
                        "http://localhost:3 weight=1",
             "balance": "least_request", "dns_ttl": "0s", "eject_after": "1000",
             "eject_time": "1ms", "eject_time_max": "24h", "max_ejected": "100%",
             "health_check": "/health", "health_interval": "10ms",
             "health_timeout": "1ms", "health_rise": "100", "health_fall": "1"},
            {"mode": "hedge", "repeat_unsafe": "yes", "budget": "1000%",
             "budget_min": "0"})
        self.assertEqual(p.returncode, 0, "%r\n%s" % (p, text))
        for u in ({"servers": "http://127.0.0.1:1", "balance": "round_robin",
                   "max_ejected": "2", "health_check": "off", "dns_ttl": "24h"},
                  {"servers": "http://127.0.0.1:1", "max_ejected": "0%"}):
            p, path, text = self.check(u, {"budget": "0%", "budget_min": "100000",
                                           "repeat_unsafe": "no"})
            self.assertEqual(p.returncode, 0, "%r\n%s" % (p, text))

    def test_url_and_servers(self):
        self.assertConfigError("'url' and 'servers' both given in [upstream \"u\"] "
                               "(use one)", "servers",
                               {"url": "http://127.0.0.1:1",
                                "servers": "http://127.0.0.1:2"})

    def test_servers_list_errors(self):
        for w in ("0", "257", "x"):
            with self.subTest(weight=w):
                self.assertConfigError("bad weight '%s' in 'servers' (1 to 256)" % w,
                                       "servers",
                                       {"servers": "http://127.0.0.1:1 weight=%s" % w})
        many = ", ".join("http://127.0.0.1:%d" % (1000 + i) for i in range(65))
        self.assertConfigError("too many servers (at most 64)", "servers",
                               {"servers": many})
        p, _, text = self.check({"servers": ", ".join(
            "http://127.0.0.1:%d" % (1000 + i) for i in range(64))})
        self.assertEqual(p.returncode, 0, "64 servers: %r" % p)
        self.assertConfigError("duplicate server 'http://127.0.0.1:1' in 'servers'",
                               "servers",
                               {"servers": "http://127.0.0.1:1, http://127.0.0.1:1/"})

    def test_eject_time_max_below_eject_time(self):
        self.assertConfigError("'eject_time_max' (5s) is below 'eject_time' (10s)",
                               "eject_time_max",
                               {"servers": "http://127.0.0.1:1", "eject_time": "10s",
                                "eject_time_max": "5s"})

    def test_bad_values(self):
        for key, value in (("balance", "random"), ("eject_after", "1001"),
                           ("eject_time", "0ms"), ("max_ejected", "101%"),
                           ("health_check", "health"), ("health_interval", "9ms"),
                           ("health_rise", "0"), ("health_fall", "101"),
                           ("dns_ttl", "25h")):
            p, path, text = self.check({"servers": "http://127.0.0.1:1", key: value})
            self.assertEqual(p.returncode, 1, "%s = %s: %r" % (key, value, p))
            self.assertRegex(p.stderr, r"%s:\d+: .*%s" % (path, key), p.stderr)
        for key, value in (("budget", "1001%"), ("budget_min", "100001"),
                           ("repeat_unsafe", "maybe")):
            p, path, text = self.check(None, {key: value})
            self.assertEqual(p.returncode, 1, "%s = %s: %r" % (key, value, p))
            self.assertRegex(p.stderr, r"%s:\d+: .*%s" % (path, key), p.stderr)


if __name__ == "__main__":
    harness.main()
