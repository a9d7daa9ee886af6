"""How error-log lines start.

Under systemd, when stderr is journald's stream (JOURNAL_STREAM holds the
"DEV:INO" of fd 2), each line starts with its syslog priority -- <3> error,
<4> warn, <6> info, <7> debug -- which journald takes off and files the line
under.  Anywhere else (JOURNAL_STREAM unset, or naming another stream, as
for a child whose stderr was sent elsewhere) each line starts with a UTC
timestamp with milliseconds.  Then the level word and the message, as ever.
The access log (JSON lines) gets neither, even on stderr.
"""

import datetime
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402

PRIO = {"error": 3, "warn": 4, "info": 6, "debug": 7}
PRIO_LINE = re.compile(r"<([0-7])>(error|warn|info|debug) \S")
STAMP_LINE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z "
                        r"(error|warn|info|debug) \S")
# A descriptor limit this low makes the default max_connections warn at
# start-up ("... may need N descriptors; the limit is 512").
LOW_NOFILE = 512


def low_nofile():
    resource.setrlimit(resource.RLIMIT_NOFILE, (LOW_NOFILE, LOW_NOFILE))


class LogTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        self.up = self.fake("up", defaults={"body": "ok"})

    def daemon_with(self, journal, **kw):
        """A fanoutd whose JOURNAL_STREAM is: "match" (its own stderr's
        DEV:INO), "other" (another file's), or None (unset)."""
        opts = dict(upstreams={"u": self.up},
                    routes={"r": {"match": "/", "upstreams": "u"}},
                    server={"access_log": "-", "max_connections": "10000"},
                    preexec_fn=low_nofile)
        opts.update(kw)
        d = self.daemon(start=False, **opts)
        # the harness appends fanoutd's stdout and stderr to this file
        open(d.stderr_path, "ab").close()
        if journal == "match":
            st = os.stat(d.stderr_path)
        elif journal == "other":
            st = os.stat(d.tmp)
        if journal is None:
            d.env["JOURNAL_STREAM"] = None
        else:
            d.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        return d

    def exercise(self, d):
        """Lines of every level: a warn at start, info, debug for a request,
        an error for a bad reload; then the access log line of /tagged."""
        d.start()
        r = d.get("/tagged")
        self.assertEqual(r.status, 200, r)
        d.extra = "[nonsense]\n"
        d.reload("error")
        d.extra = ""
        harness.wait_until(lambda: '"/tagged"' in d.stderr_text(),
                           what="the access log line on stderr")
        d.stop()
        return d.stderr_text().splitlines()

    def split(self, lines):
        """(error-log lines, access-log entries)"""
        log, access = [], []
        for line in lines:
            if line.startswith("{"):
                access.append(json.loads(line))
            else:
                log.append(line)
        return log, access

    def assertAccessLog(self, access):
        self.assertTrue(any(e.get("path") == "/tagged" for e in access),
                        access)

    # ------------------------------------------------------------------
    def test_journald_stream_gets_syslog_priorities(self):
        d = self.daemon_with("match")
        log, access = self.split(self.exercise(d))
        self.assertAccessLog(access)
        levels = set()
        for line in log:
            m = PRIO_LINE.match(line)
            self.assertIsNotNone(m, "no priority prefix: %r" % line)
            self.assertEqual(int(m.group(1)), PRIO[m.group(2)], line)
            levels.add(m.group(2))
        self.assertEqual(levels, set(PRIO), "not every level was seen")
        text = "\n".join(log)
        # the limit is LOW_NOFILE, or a little less under valgrind, which
        # keeps a few descriptors for itself
        self.assertRegex(text, r"(?m)^<4>warn max_connections 10000, all busy,"
                               r" may need \d+ descriptors; the limit is \d+")
        self.assertRegex(text, r"(?m)^<6>info fanoutd ready ")
        self.assertRegex(text, r"(?m)^<3>error reload failed, keeping the "
                               r"running configuration$")
        self.assertIsNone(re.search(r"\d{4}-\d\d-\d\dT\d\d:", text),
                          "a timestamp under journald")

    def test_other_stream_gets_timestamps(self):
        self.check_timestamps(self.daemon_with("other"))

    def test_no_journal_stream_gets_timestamps(self):
        self.check_timestamps(self.daemon_with(None))

    def check_timestamps(self, d):
        before = datetime.datetime.now(datetime.timezone.utc)
        log, access = self.split(self.exercise(d))
        after = datetime.datetime.now(datetime.timezone.utc)
        self.assertAccessLog(access)
        levels = set()
        for line in log:
            self.assertNotRegex(line, r"^<\d>")
            m = STAMP_LINE.match(line)
            self.assertIsNotNone(m, "no timestamp: %r" % line)
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f")
            t = t.replace(tzinfo=datetime.timezone.utc)
            self.assertTrue(before - datetime.timedelta(seconds=1) <= t <=
                            after + datetime.timedelta(seconds=1),
                            "%s is not now (UTC): %r" % (t, line))
            levels.add(m.group(2))
        self.assertEqual(levels, set(PRIO), "not every level was seen")
        self.assertRegex("\n".join(log), harness.LOG_START +
                         r"warn max_connections 10000, all busy")

    def test_start_failure_under_journald_is_an_error(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        d = self.daemon_with("match", port=s.getsockname()[1])
        with self.assertRaises(AssertionError):
            d.start()
        self.assertEqual(d.returncode, 2)
        self.assertRegex(d.stderr_text(), r"(?m)^<3>error cannot listen on "
                         r"127\.0\.0\.1:%d: address in use by %d \("
                         % (s.getsockname()[1], os.getpid()))

    def run_journal(self, config, *args):
        """fanoutd ARGS on CONFIG with stderr a file that JOURNAL_STREAM
        names, as under systemd's ExecStartPre or ExecStart; returns the
        exit status and what it wrote."""
        tmp = tempfile.mkdtemp(prefix="fanoutd-it-")
        self.addCleanup(shutil.rmtree, tmp, True)
        path = os.path.join(tmp, "fanoutd.ini")
        with open(path, "w") as f:
            f.write(config)
        err = os.path.join(tmp, "stderr")
        with open(err, "wb") as f:
            st = os.fstat(f.fileno())
            env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
            p = subprocess.run([harness.FANOUTD, "-c", path] + list(args),
                               stdout=subprocess.DEVNULL, stderr=f, env=env,
                               timeout=harness.PATIENCE)
        with open(err) as f:
            return p.returncode, f.read(), path

    def test_config_errors_and_warnings_under_journald_have_priorities(self):
        good = ("[upstream \"u\"]\nurl = %s\n[route \"r\"]\nmatch = /\n"
                "upstreams = u\nquorum = 1\n" % self.up.url)
        rc, out, path = self.run_journal(good, "-t")
        self.assertEqual(rc, 0, out)
        self.assertEqual(out, "<4>%s:6: warning: key 'quorum' has no effect in "
                         "mode proxy (route 'r'; it is for mode quorum)\n" % path)
        rc, out, path = self.run_journal(good.replace("match", "mtach"))
        self.assertEqual(rc, 1, out)
        lines = out.splitlines()
        self.assertIn("<3>%s:4: unknown key 'mtach' in [route \"r\"]" % path, lines)
        self.assertTrue(all(line.startswith("<") for line in lines), lines)


if __name__ == "__main__":
    harness.main()
