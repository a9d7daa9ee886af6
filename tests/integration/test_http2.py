"""Upstreams over HTTP/2 without TLS (http2 = prior-knowledge), against
nghttpd: answers, large bodies and fan-out go through, and several requests
in a row work (libcurl 7.88 failed a second stream on a reused h2c
connection; fanoutd needs 8.14). Streams, resets and connection reuse are
watched stream by stream in test_h2_upstream.py."""

import os
import shutil
import signal
import subprocess
import tempfile

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402


def nghttpd_path():
    return shutil.which("nghttpd") or (
        "/usr/sbin/nghttpd" if os.access("/usr/sbin/nghttpd", os.X_OK) else None)


class Http2Test(harness.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.bin = nghttpd_path()
        if cls.bin is None:
            raise harness.unittest.SkipTest(
                "nghttpd not installed (apt-get install nghttp2-server)")
        cls.dir = tempfile.mkdtemp(prefix="fanoutd-h2-")
        with open(os.path.join(cls.dir, "data.json"), "wb") as f:
            f.write(b'{"h2": true}')
        cls.big = os.urandom(2 * 1024 * 1024)
        with open(os.path.join(cls.dir, "big.bin"), "wb") as f:
            f.write(cls.big)
        for attempt in range(5):
            cls.port = harness.free_port()
            cls.proc = subprocess.Popen(
                [cls.bin, "--no-tls", "-a", "127.0.0.1", "-d", cls.dir,
                 str(cls.port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                harness.wait_until(lambda: cls._up() or cls.proc.poll() is not None,
                                   what="nghttpd listening")
            except AssertionError:
                pass
            if cls.proc.poll() is None and cls._up():
                return
            cls._stop()
        raise AssertionError("nghttpd did not start")

    @classmethod
    def _up(cls):
        import socket
        try:
            socket.create_connection(("127.0.0.1", cls.port),
                                     harness.PATIENCE).close()
            return True
        except OSError:
            return False

    @classmethod
    def _stop(cls):
        if cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(5)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait(5)

    @classmethod
    def tearDownClass(cls):
        cls._stop()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start(self):
        url = "http://127.0.0.1:%d" % self.port
        return self.daemon(
            upstreams={"h2": {"url": url, "http2": "prior-knowledge"},
                       "h2b": {"url": url, "http2": "prior-knowledge"}},
            routes={"r": {"match": "/", "upstreams": "h2"},
                    "all": {"match": "/all/", "strip_prefix": "yes",
                            "mode": "all", "upstreams": "h2, h2b"}})

    def test_requests_in_a_row(self):
        fd = self.start()
        for i in range(5):
            r = fd.get("/data.json")
            self.assertEqual(r.status, 200, "request %d" % i)
            self.assertEqual(r.body, b'{"h2": true}')

    def test_large_body(self):
        fd = self.start()
        r = fd.get("/big.bin")
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, self.big)

    def test_fan_out(self):
        fd = self.start()
        r = fd.get("/all/data.json")
        self.assertEqual(r.status, 200)
        env = harness.json.loads(r.body)
        self.assertEqual(env["h2"], {"status": 200, "body": {"h2": True}})
        self.assertEqual(env["h2b"], {"status": 200, "body": {"h2": True}})


if __name__ == "__main__":
    harness.main()
