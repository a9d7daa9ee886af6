"""The descriptor-limit warning at start and reload.

When max_connections, all busy, could need more descriptors than
RLIMIT_NOFILE allows, fanoutd warns once, naming both ways out with their
figures: raise the limit to the figure needed, or lower max_connections
to what fits.  A reload that leaves the figure as it was says nothing
again; one that changes it (max_connections here) warns with the new one.
"""

import re
import resource

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

LOW_NOFILE = 512
WARNING = re.compile(
    harness.LOG_START +
    r"warn max_connections (\d+), all busy, may need (\d+) descriptors; "
    r"the limit is (\d+): raise LimitNOFILE \(or ulimit -n\) to (\d+), or "
    r"lower max_connections to (\d+)$")


def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_NOFILE, LOW_NOFILE))


class NofileWarningTest(harness.TestCase):

    def warnings(self, d):
        return [tuple(int(g) for g in m.groups())
                for m in WARNING.finditer(d.stderr_text())]

    def test_once_then_again_only_when_the_figure_changes(self):
        up = self.fake("up", defaults={"body": "ok"})
        # mode proxy: each busy connection may take 2 descriptors
        d = self.daemon(upstreams={"u": up},
                        routes={"r": {"match": "/", "upstreams": "u",
                                      "mode": "proxy"}},
                        server={"max_connections": "10000", "workers": "1"},
                        preexec_fn=low_nofile)
        self.assertIn("may need", d.stderr_text())
        w = self.warnings(d)
        self.assertEqual(len(w), 1, d.stderr_text())
        maxc, need, limit, raise_to, lower_to = w[0]
        # the limit set, or a little less under valgrind, which keeps a
        # few descriptors for itself
        self.assertLessEqual(limit, LOW_NOFILE)
        self.assertGreater(limit, LOW_NOFILE - 64)
        self.assertEqual((maxc, raise_to), (10000, need))
        base = need - 2 * maxc
        self.assertGreater(base, 0)
        self.assertEqual(lower_to, (limit - base) // 2, w[0])
        self.assertLessEqual(base + 2 * lower_to, limit)
        self.assertGreater(base + 2 * (lower_to + 1), limit)

        # the same figure: no second warning (the reload is counted only
        # after the figure was worked out, so it would be there by now)
        d.reload()
        d.reload()
        self.assertEqual(self.warnings(d), w, d.stderr_text())

        # another figure: warned of once
        d.server_opts["max_connections"] = "5000"
        d.reload()
        d.reload()
        w2 = self.warnings(d)
        self.assertEqual(len(w2), 2, d.stderr_text())
        self.assertEqual(w2[1][:3], (5000, base + 2 * 5000, limit))
        self.assertEqual(w2[1][4], lower_to)

        # a figure that fits: quiet, and going back over warns again
        d.server_opts["max_connections"] = str(lower_to)
        d.reload()
        self.assertEqual(len(self.warnings(d)), 2, d.stderr_text())
        d.server_opts["max_connections"] = "5000"
        d.reload()
        self.assertEqual(len(self.warnings(d)), 3, d.stderr_text())

        r = d.get("/x")
        self.assertEqual(r.status, 200, r)


if __name__ == "__main__":
    harness.main()
