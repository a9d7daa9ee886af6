"""fanoutd's command line: -V, -h, -t, and the exit codes 0 / 1 / 2."""

import os
import re
import socket
import tempfile

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
from harness import run_cli, free_port


def write(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


GOOD = """\
[server]
listen = 127.0.0.1:{port}
access_log = off
log_level = debug

[admin]
listen = 127.0.0.1:{admin}

[upstream "a"]
url = http://127.0.0.1:{up}
timeout = 2s

[route "r"]
match = /
upstreams = a
deadline = 1s
"""


class CliTest(harness.TestCase):

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="fanoutd-cli-")
        self.addCleanup(lambda: __import__("shutil").rmtree(self.tmp, ignore_errors=True))

    def good_config(self, port=None, admin=None):
        return write(self.tmp, "good.ini", GOOD.format(
            port=port or free_port(), admin=admin or free_port(), up=free_port()))

    def test_version(self):
        for flag in ("-V", "--version"):
            p = run_cli([flag])
            self.assertEqual(p.returncode, 0, "%s: %r" % (flag, p))
            self.assertRegex(p.stdout.strip(), r"^fanoutd \S+$", flag)
        ac = os.path.join(harness.SRCDIR, "configure.ac")
        if os.path.exists(ac):
            with open(ac) as f:
                m = re.search(r"AC_INIT\(\[fanoutd\],\s*\[([^\]]+)\]", f.read())
            if m:
                self.assertEqual(run_cli(["-V"]).stdout.strip(), "fanoutd " + m.group(1))

    def test_help(self):
        for flag in ("-h", "--help"):
            p = run_cli([flag])
            self.assertEqual(p.returncode, 0, "%s: %r" % (flag, p))
            for opt in ("-c", "-t", "-V", "-h"):
                self.assertIn(opt, p.stdout, "%s output lacks %s:\n%s" % (flag, opt, p.stdout))
            self.assertRegex(p.stdout.lower(), r"usage")

    def test_unknown_option_is_usage_error(self):
        p = run_cli(["--no-such-option"])
        self.assertEqual(p.returncode, 1, p)
        self.assertTrue(p.stderr.strip(), "no message on stderr: %r" % p)

    def test_check_good(self):
        path = self.good_config()
        for flag in ("-t", "--test"):
            p = run_cli(["-c", path, flag])
            self.assertEqual(p.returncode, 0, p)
            self.assertIn("%s: ok" % path, p.stdout + p.stderr, p)

    def test_check_does_not_bind(self):
        # -t checks the file; it must not need (or take) the ports.
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        path = self.good_config(port=busy.getsockname()[1])
        p = run_cli(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, p)

    def test_check_bad_reports_every_error_with_file_and_line(self):
        text = GOOD.format(port=free_port(), admin=free_port(), up=free_port())
        lines = text.splitlines()
        # line 3 (1-based) becomes a misspelt key in [server]
        lines.insert(2, "listn = 127.0.0.1:1")
        text = "\n".join(lines) + "\n"
        text += "\n[route \"r2\"]\nmatch = /x\nupstreams = a\ndeedline = 1s\n"
        bad_line2 = len(text.splitlines())
        path = write(self.tmp, "bad.ini", text)
        p = run_cli(["-t", "-c", path])
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(out, r"%s:3: .*listn" % re.escape(path), out)
        self.assertRegex(out, r"%s:%d: .*deedline" % (re.escape(path), bad_line2), out)
        self.assertNotIn("%s: ok" % path, out)

    def test_check_unknown_upstream_and_bad_duration(self):
        text = GOOD.format(port=free_port(), admin=free_port(), up=free_port())
        text = text.replace("upstreams = a", "upstreams = a, nosuch")
        text = text.replace("deadline = 1s", "deadline = soon")
        path = write(self.tmp, "bad2.ini", text)
        p = run_cli(["-t", "-c", path])
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, p)
        self.assertIn("nosuch", out)
        self.assertRegex(out, r"%s:\d+: " % re.escape(path))

    def test_bad_config_at_start_exits_1(self):
        path = write(self.tmp, "bad3.ini", "[server]\nlistn = 127.0.0.1:1\n")
        p = run_cli(["-c", path])
        self.assertEqual(p.returncode, 1, p)
        self.assertRegex(p.stderr, r"%s:2: .*listn" % re.escape(path))

    def test_missing_file(self):
        path = os.path.join(self.tmp, "does-not-exist.ini")
        for args in (["-c", path], ["-t", "-c", path]):
            p = run_cli(args)
            self.assertEqual(p.returncode, 1, "%s: %r" % (args, p))
            self.assertIn(path, p.stdout + p.stderr)

    def test_inline_hash_comment_on_access_log(self):
        # "#" after a blank starts a comment, as ";" does: the log goes to
        # PATH exactly, not to a file named "PATH   # access log"
        up = self.fake("up")
        fd = self.daemon(start=False, upstreams={"up": up},
                         routes={"r": {"match": "/", "upstreams": "up"}})
        fd.server_opts["access_log"] = fd.access_log + "   # access log"
        fd.port, fd.admin_port = free_port(), free_port()
        fd.write_config()
        p = run_cli(["-t", "-c", fd.config_path])
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(p.stderr, "", p)
        self.assertFalse(os.path.exists(fd.access_log), "-t created the access log")
        fd.start()
        r = fd.get("/x?body=hi", [("X-Request-Id", "inline-comment")])
        self.assertEqual((r.status, r.body), (200, b"hi"), r)
        e = fd.wait_access_log(request_id="inline-comment")
        self.assertEqual(e["status"], 200, e)
        self.assertEqual(sorted(n for n in os.listdir(fd.tmp) if "access" in n),
                         ["access.log"])

    def test_check_prints_warnings_and_still_ok(self):
        text = GOOD.format(port=free_port(), admin=free_port(), up=free_port())
        text += "mode = all\nhedge_delay = 10ms\nquorum = 1  ; for quorum\n"
        path = write(self.tmp, "warn.ini", text)
        lines = text.splitlines()
        hd = lines.index("hedge_delay = 10ms") + 1
        p = run_cli(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, p)
        self.assertEqual(p.stdout, "%s: ok\n" % path, p)
        self.assertEqual(p.stderr,
                         "%s:%d: warning: key 'hedge_delay' has no effect in mode all "
                         "(route 'r'; it is for mode hedge)\n"
                         "%s:%d: warning: key 'quorum' has no effect in mode all "
                         "(route 'r'; it is for mode quorum)\n"
                         % (path, hd, path, hd + 1), p)

    def test_warnings_logged_at_start_and_reload(self):
        up = self.fake("up")
        fd = self.daemon(upstreams={"up": up},
                         routes={"r": {"match": "/", "upstreams": "up",
                                       "mode": "first", "partial": "allow"}})
        want = "warn %s:" % fd.config_path
        harness.wait_until(lambda: fd.log_contains(want), what="the warning at start")
        self.assertRegex(fd.stderr_text(), harness.LOG_START +
                         r"warn %s:\d+: warning: key 'partial' "
                         r"has no effect in mode first \(route 'r'; it is for mode all\)"
                         % re.escape(fd.config_path))
        fd.routes["r"]["mode"] = "hedge"
        fd.reload("ok")
        self.assertRegex(fd.stderr_text(), harness.LOG_START +
                         r"warn reload: %s:\d+: warning: key "
                         r"'partial' has no effect in mode hedge"
                         % re.escape(fd.config_path))

    def test_check_empty_config_is_an_error(self):
        for name, text in (("empty.ini", ""), ("comments.ini", "# nothing\n; here\n"),
                           ("noroute.ini", "[server]\nlisten = 127.0.0.1:%d\n"
                            % free_port())):
            path = write(self.tmp, name, text)
            for args in (["-t", "-c", path], ["-c", path]):
                p = run_cli(args)
                self.assertEqual(p.returncode, 1, "%s: %r" % (args, p))
                self.assertEqual(p.stderr, "%s: no [route] section: nothing to serve\n"
                                 % path, p)
                self.assertNotIn("ok", p.stdout)

    def test_check_access_log_that_cannot_be_opened(self):
        text = GOOD.format(port=free_port(), admin=free_port(), up=free_port())
        text = text.replace("access_log = off", "access_log = /nonexistent/dir/acc.log")
        path = write(self.tmp, "log.ini", text)
        p = run_cli(["-t", "-c", path])
        self.assertEqual(p.returncode, 1, p)
        self.assertEqual(p.stderr, "%s:3: cannot create access_log "
                         "'/nonexistent/dir/acc.log' in '/nonexistent/dir': "
                         "No such file or directory\n" % path, p)
        self.assertEqual(p.stdout, "")
        # a directory is no log file, at start as at -t
        text = text.replace("/nonexistent/dir/acc.log", self.tmp)
        path = write(self.tmp, "dir.ini", text)
        for args in (["-t", "-c", path], ["-c", path]):
            p = run_cli(args)
            self.assertEqual(p.returncode, 1, "%s: %r" % (args, p))
            self.assertEqual(p.stderr, "%s:3: cannot write access_log '%s': "
                             "Is a directory\n" % (path, self.tmp), p)
        # -t neither creates a log that is not there yet nor touches one
        log = os.path.join(self.tmp, "acc.log")
        path = write(self.tmp, "new.ini", text.replace(self.tmp, log))
        p = run_cli(["-t", "-c", path])
        self.assertEqual(p.returncode, 0, p)
        self.assertFalse(os.path.exists(log), "-t created the access log")
        write(self.tmp, "acc.log", "old\n")
        os.utime(log, (1, 1))
        self.assertEqual(run_cli(["-t", "-c", path]).returncode, 0)
        with open(log) as f:
            self.assertEqual(f.read(), "old\n")
        self.assertEqual(os.stat(log).st_mtime, 1)

    def _busy_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        self.addCleanup(s.close)
        return s.getsockname()[1]

    def test_unbindable_listen_port_exits_2(self):
        path = self.good_config(port=self._busy_port())
        p = run_cli(["-c", path])
        self.assertEqual(p.returncode, 2, p)
        self.assertTrue(p.stderr.strip(), "no reason on stderr")

    def test_unbindable_admin_port_exits_2(self):
        path = self.good_config(admin=self._busy_port())
        p = run_cli(["-c", path])
        self.assertEqual(p.returncode, 2, p)
        self.assertTrue(p.stderr.strip(), "no reason on stderr")


if __name__ == "__main__":
    harness.main()
