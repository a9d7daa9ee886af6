"""What an operator meets on the first day: `make install` into a DESTDIR
keeps an edited configuration (the shipped one goes beside it as
fanoutd.ini.dist) and `make uninstall` leaves it; the installed unit passes
`systemd-analyze verify` and names the installed files; the README's
"A first config" works as written against scripts/demo_upstream.py; the
license is said.

make runs in the build directory of the fanoutd under test (FANOUTD, as
make check sets it); a test that finds no Makefile there skips.  The
README's ports are replaced by free ones (tests run side by side), nothing
else in its text is.
"""

import filecmp
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
from harness import PATIENCE, free_port, http_get, run_cli, wait_until  # noqa: E402

BUILDDIR = os.path.dirname(os.path.abspath(harness.FANOUTD))
SHIPPED = os.path.join(harness.SRCDIR, "conf", "fanoutd.ini")
README = os.path.join(harness.SRCDIR, "README.md")


def make(*args):
    """make -C BUILDDIR ARGS, outside any make that runs this test: its
    MAKEFLAGS (jobserver, TESTS=...) are not passed on."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES",
                        "DESTDIR", "TESTS")}
    p = subprocess.run(["make", "-C", BUILDDIR] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=env, timeout=max(PATIENCE, 300))
    return p.returncode, p.stdout.decode("utf-8", "replace")


def find(root, suffix):
    """The one file under ROOT whose path ends with SUFFIX."""
    hits = []
    for d, _, files in os.walk(root):
        for f in files:
            p = os.path.join(d, f)
            if p.endswith(suffix):
                hits.append(p)
    if len(hits) != 1:
        raise AssertionError("%d files ending in %s under %s: %r"
                             % (len(hits), suffix, root, hits))
    return hits[0]


def read(path):
    with open(path) as f:
        return f.read()


class InstallTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(os.path.join(BUILDDIR, "Makefile")):
            raise unittest.SkipTest("no Makefile in %s (FANOUTD=%s)"
                                    % (BUILDDIR, harness.FANOUTD))
        if shutil.which("make") is None:
            raise unittest.SkipTest("make not installed")

    def setUp(self):
        self.dest = tempfile.mkdtemp(prefix="fanoutd-install-")
        self.addCleanup(shutil.rmtree, self.dest, True)

    def install(self):
        rc, out = make("install", "DESTDIR=" + self.dest)
        self.assertEqual(rc, 0, "make install DESTDIR=%s failed:\n%s" % (self.dest, out))
        return out

    def test_install_keeps_an_edited_config(self):
        out = self.install()
        conf = find(self.dest, os.sep + os.path.join("fanoutd", "fanoutd.ini"))
        dist = conf + ".dist"
        self.assertTrue(filecmp.cmp(conf, SHIPPED, shallow=False),
                        "%s is not conf/fanoutd.ini" % conf)
        self.assertFalse(os.path.exists(dist), "%s after a first install" % dist)
        self.assertNotIn("differs", out)

        edited = read(conf).replace("listen = 127.0.0.1:8080",
                                    "listen = 127.0.0.1:8081") + "; mine\n"
        self.assertNotEqual(edited, read(SHIPPED))
        with open(conf, "w") as f:
            f.write(edited)

        out = self.install()
        self.assertEqual(read(conf), edited, "make install overwrote the edited config")
        self.assertTrue(os.path.isfile(dist), "no %s beside the edited config" % dist)
        self.assertTrue(filecmp.cmp(dist, SHIPPED, shallow=False),
                        "%s is not conf/fanoutd.ini" % dist)
        self.assertIn(conf, out, "make install did not say the config was kept:\n" + out)
        self.assertIn(dist, out, "make install did not name the .dist file:\n" + out)

        before = sorted(os.path.relpath(os.path.join(d, f), self.dest)
                        for d, _, fs in os.walk(self.dest) for f in fs)
        self.install()          # a third time: nothing changes
        after = sorted(os.path.relpath(os.path.join(d, f), self.dest)
                       for d, _, fs in os.walk(self.dest) for f in fs)
        self.assertEqual(after, before)
        self.assertEqual(read(conf), edited)
        self.assertTrue(filecmp.cmp(dist, SHIPPED, shallow=False))

        rc, out = make("uninstall", "DESTDIR=" + self.dest)
        self.assertEqual(rc, 0, "make uninstall failed:\n" + out)
        self.assertEqual(read(conf), edited, "make uninstall removed the edited config")
        self.assertFalse(os.path.exists(dist), "make uninstall left %s" % dist)
        left = [os.path.relpath(os.path.join(d, f), self.dest)
                for d, _, fs in os.walk(self.dest) for f in fs]
        self.assertEqual(left, [os.path.relpath(conf, self.dest)],
                         "make uninstall left more than the edited config")

    def test_uninstall_removes_an_unedited_config(self):
        self.install()
        conf = find(self.dest, os.sep + os.path.join("fanoutd", "fanoutd.ini"))
        rc, out = make("uninstall", "DESTDIR=" + self.dest)
        self.assertEqual(rc, 0, "make uninstall failed:\n" + out)
        self.assertFalse(os.path.exists(conf), "make uninstall left the shipped config")

    def test_installed_unit_verifies_and_names_the_installed_files(self):
        self.install()
        unit = find(self.dest, os.sep + os.path.join("system", "fanoutd.service"))
        binary = find(self.dest, os.sep + os.path.join("sbin", "fanoutd"))
        conf = find(self.dest, os.sep + os.path.join("fanoutd", "fanoutd.ini"))
        # the paths as they are on the target system, DESTDIR-less
        sys_binary = "/" + os.path.relpath(binary, self.dest)
        sys_conf = "/" + os.path.relpath(conf, self.dest)
        text = read(unit)
        execs = dict(re.findall(r"(?m)^(ExecStart(?:Pre)?)=(.*)$", text))
        self.assertEqual(execs.get("ExecStart"), "%s -c %s" % (sys_binary, sys_conf), text)
        self.assertEqual(execs.get("ExecStartPre"), "%s -t -c %s" % (sys_binary, sys_conf))
        p = subprocess.run([binary, "-t", "-c", conf], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=PATIENCE)
        self.assertEqual(p.returncode, 0, "the installed fanoutd -t on the installed "
                         "config:\n%s" % p.stdout.decode("utf-8", "replace"))

        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            self.skipTest("systemd-analyze not installed (apt-get install systemd): "
                          "the installed unit is not verified")
        # verify checks that the Exec binaries exist: point them at the one
        # in DESTDIR (as test_systemd.py does with the tree's unit)
        vdir = os.path.join(self.dest, "verify")
        os.mkdir(vdir)
        copy = os.path.join(vdir, "fanoutd.service")
        with open(copy, "w") as f:
            f.write(text.replace(sys_binary + " ", binary + " "))
        env = dict(os.environ, SYSTEMD_PAGER="", PAGER="cat", SYSTEMD_COLORS="0")
        p = subprocess.run([analyze, "verify", "--man=no", copy], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=env, timeout=60,
                           stdin=subprocess.DEVNULL)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")
        self.assertEqual((p.returncode, out.strip()), (0, ""),
                         "systemd-analyze verify --man=no on the installed unit:\n" + out)


def readme_first_config():
    """(the ini block, the sh block) of README.md's "A first config"."""
    text = read(README)
    m = re.search(r"(?m)^## A first config\n(.*?)(?=^## )", text, re.S)
    if m is None:
        raise AssertionError("README.md has no \"## A first config\" section")
    sec = m.group(1)
    ini = re.search(r"(?ms)^```ini\n(.*?)^```", sec)
    sh = re.search(r"(?ms)^```sh\n(.*?)^```", sec)
    if ini is None or sh is None:
        raise AssertionError("\"A first config\" lacks its ```ini or ```sh block")
    if sh.start() < ini.start():
        raise AssertionError("\"A first config\": the commands come before the config")
    return ini.group(1), sh.group(1)


class FirstConfigTest(unittest.TestCase):
    """The README's first config, run as the README says."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fanoutd-first-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ini, self.sh = readme_first_config()
        self.cmds = [l.split("#")[0].strip() for l in self.sh.splitlines()]
        self.cmds = [c for c in self.cmds if c]

    def command(self, pattern):
        hits = [c for c in self.cmds if re.search(pattern, c)]
        self.assertEqual(len(hits), 1, "README first-config commands matching %r: %r"
                         % (pattern, self.cmds))
        return hits[0]

    def start_upstreams(self, ports):
        """The README's demo_upstream.py line, its ports mapped; returns the
        Popen.  Retried on new ports when one was taken in the meantime."""
        line = self.command(r"scripts/demo_upstream\.py")
        argv = line.rstrip("&").split()
        self.assertEqual(argv[:2], ["python3", "scripts/demo_upstream.py"], line)
        specs = argv[2:]
        self.assertTrue(specs and all(re.fullmatch(r"\w+=\d+", s) for s in specs), line)
        for attempt in range(4):
            for s in specs:
                ports[int(s.split("=")[1])] = free_port()
            args = ["%s=%d" % (s.split("=")[0], ports[int(s.split("=")[1])])
                    for s in specs]
            log = open(os.path.join(self.tmp, "upstreams.log"), "wb")
            proc = subprocess.Popen([sys.executable, os.path.join(
                harness.SRCDIR, "scripts", "demo_upstream.py"), "--host", "127.0.0.1"]
                + args, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            log.close()
            harness._live[proc.pid] = proc
            self.addCleanup(harness._terminate, proc)
            want = len(specs)

            def ready():
                if proc.poll() is not None:
                    return "exited"
                return read(log.name).count("listening on") == want or None
            state = wait_until(ready, what="the demo upstreams listening")
            if state is True:
                return proc
            if "cannot listen" not in read(log.name) or attempt == 3:
                self.fail("demo_upstream.py exited %s:\n%s" % (proc.returncode,
                                                                read(log.name)))
        self.fail("unreachable")

    def test_readme_first_config(self):
        if not os.access(harness.FANOUTD, os.X_OK):
            self.skipTest("fanoutd binary not found at %s" % harness.FANOUTD)
        # the block as written: its ports are the ones the commands use
        written = set(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", self.ini))
        used = set(int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", self.sh))
        used |= set(int(p) for p in re.findall(r"\w+=(\d+)", self.sh))
        self.assertTrue(used <= written, "the commands use ports %r the config does "
                        "not have" % sorted(used - written))
        path_written = os.path.join(self.tmp, "first.ini")
        with open(path_written, "w") as f:
            f.write(self.ini)
        p = run_cli(["-t", "-c", path_written])
        self.assertEqual((p.returncode, p.stdout.strip()),
                         (0, "%s: ok" % path_written), "fanoutd -t on the README's "
                         "config as written:\n%s%s" % (p.stdout, p.stderr))
        self.assertEqual(p.stderr.strip(), "", "fanoutd -t warns about the README's "
                         "config:\n" + p.stderr)

        ports = {}          # README's port -> the one used here
        self.start_upstreams(ports)
        own = sorted(written - set(ports))      # fanoutd's listen and admin
        for attempt in range(4):
            for old in own:
                ports[old] = free_port()
            text = re.sub(r"127\.0\.0\.1:(\d+)",
                          lambda m: "127.0.0.1:%d" % ports[int(m.group(1))], self.ini)
            conf = os.path.join(self.tmp, "first-%d.ini" % attempt)
            with open(conf, "w") as f:
                f.write(text)
            p = run_cli(["-t", "-c", conf])
            self.assertEqual(p.returncode, 0, p)
            stderr = open(os.path.join(self.tmp, "fanoutd-%d.log" % attempt), "wb")
            proc = subprocess.Popen([harness.FANOUTD, "-c", conf], stdin=subprocess.DEVNULL,
                                    stdout=stderr, stderr=stderr)
            stderr.close()
            harness._live[proc.pid] = proc
            self.addCleanup(harness._terminate, proc)
            admin = re.search(r"(?ms)^\[admin\].*?^listen = 127\.0\.0\.1:(\d+)", text)
            self.assertIsNotNone(admin, text)
            admin = int(admin.group(1))

            def ready():
                if proc.poll() is not None:
                    return "exited"
                try:
                    r = http_get(admin, "/healthz", timeout=PATIENCE)
                except (OSError, AssertionError):
                    return None
                return r.status == 200 and r.body.strip() == b"ok" or None
            if wait_until(ready, what="fanoutd's /healthz") is True:
                break
            log = read(stderr.name)
            if "Address already in use" not in log or attempt == 3:
                self.fail("fanoutd on the README's config exited %s:\n%s"
                          % (proc.returncode, log))

        for line in (c for c in self.cmds if c.startswith("curl ")):
            url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S*)", line)
            self.assertIsNotNone(url, line)
            port = ports[int(url.group(1))]
            r = http_get(port, url.group(2), timeout=PATIENCE)
            self.assertEqual(r.status, 200, "%s (on port %d): %r\n%s"
                             % (line, port, r, read(stderr.name)))
            doc = json.loads(r.body.decode("utf-8"))
            if url.group(2) == "/api/users":
                self.assertEqual(doc["users"][0]["name"], "ada", doc)
                self.assertEqual(doc["seen"]["upstream"], "users", doc)
                self.assertEqual(doc["seen"]["x_request_id"], r.header("x-request-id"))
            elif url.group(2) == "/api/profile":
                self.assertEqual(list(doc), ["users", "orders", "recs"], doc)
                for name in doc:
                    self.assertEqual(doc[name].get("status"), 200, doc)
                self.assertIn("tea", doc["recs"]["body"]["recommendations"], doc)
        curls = [c for c in self.cmds if c.startswith("curl ")]
        self.assertTrue(any("/api/users" in c for c in curls), curls)
        self.assertTrue(any("/api/profile" in c for c in curls), curls)

        # "kill": fanoutd drains and exits 0
        os.kill(proc.pid, signal.SIGTERM)
        try:
            rc = proc.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            self.fail("fanoutd still running %.0fs after SIGTERM" % PATIENCE)
        harness._live.pop(proc.pid, None)
        self.assertEqual(rc, 0, read(stderr.name))
        paths = [json.loads(l).get("path") for l in read(stderr.name).splitlines()
                 if l.startswith("{")]
        self.assertIn("/api/users", paths, "no access-log line on stderr (access_log = -)")


class LicenseTest(unittest.TestCase):

    def test_license_is_isc_and_said(self):
        text = read(os.path.join(harness.SRCDIR, "LICENSE"))
        self.assertIn("Copyright (c) 2026 The fanoutd authors", text)
        self.assertIn("Permission to use, copy, modify, and/or distribute this software "
                      "for any\npurpose with or without fee is hereby granted", text)
        self.assertIn("ISC", read(README))
        p = run_cli(["-V"])
        self.assertEqual(p.returncode, 0, p)
        self.assertRegex(p.stdout, r"^fanoutd \S+\n$", "stdout is the version line alone")
        self.assertRegex(p.stderr, r"ISC license", p)


if __name__ == "__main__":
    harness.main()
