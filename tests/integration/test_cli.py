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
