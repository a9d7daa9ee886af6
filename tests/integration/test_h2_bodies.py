"""Bodies over the HTTP/2 front end, both ways, through curl: request
bodies reach the upstream whole whether they stream (mode proxy) or are
collected first (mode all), and large answers reach the client whole over
h2c and over TLS. Each of these once failed: a collected body went out after
its first DATA frame, and a large answer stalled when the socket took a
whole batch of frames at once."""

import hashlib
import os
import shutil
import subprocess
import tempfile

import sys
sys.dont_write_bytecode = True  # keep the source tree clean

import harness  # noqa: E402
import h2raw  # noqa: E402

PATIENCE = harness.PATIENCE


def md5(b):
    return hashlib.md5(b).hexdigest()


class H2BodiesTest(harness.TestCase):

    @classmethod
    def setUpClass(cls):
        for tool in ("curl", "openssl"):
            if shutil.which(tool) is None:
                raise harness.unittest.SkipTest("%s not installed" % tool)
        cls.dir = tempfile.mkdtemp(prefix="fanoutd-h2b-")
        cls.cert = os.path.join(cls.dir, "cert.pem")
        cls.key = os.path.join(cls.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-keyout", cls.key,
                        "-out", cls.cert], check=True, capture_output=True,
                       timeout=PATIENCE)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def start(self):
        # listens in clear text (fd.port) and with TLS (fd.tls_port); ports
        # chosen by the harness, so that a start that lost one is retried
        self.up = self.fake("up")
        fd = h2raw.TlsFanoutd(
            cert=self.cert, key=self.key,
            upstreams={"up": self.up},
            routes={"p": {"match": "/", "upstreams": "up"},
                    "a": {"match": "/all", "mode": "all", "upstreams": "up"}},
            server={"max_body_size": "4m"})
        self._daemons.append(fd)
        self.addCleanup(fd.cleanup)
        fd.start()
        return fd, fd.tls_port

    def curl(self, url, *args, tls=False):
        out = os.path.join(self.dir, "out-%d" % os.getpid())
        cmd = ["curl", "-sS", "-m", "%d" % PATIENCE, "-o", out, "-w",
               "%{http_code} %{http_version}"]
        cmd += ["--http2", "-k"] if tls else ["--http2-prior-knowledge"]
        r = subprocess.run(cmd + list(args) + [url], capture_output=True,
                           timeout=PATIENCE + 10)
        try:
            with open(out, "rb") as f:
                body = f.read()
            os.unlink(out)
        except FileNotFoundError:
            body = b""  # curl wrote nothing
        code, _, version = r.stdout.decode().partition(" ")
        return r.returncode, code, version, body

    def upload(self, path):
        fd, _ = self.start()
        data = os.urandom(700 * 1024)
        src = os.path.join(self.dir, "upload.bin")
        with open(src, "wb") as f:
            f.write(data)
        rc, code, version, _ = self.curl(
            "http://127.0.0.1:%d%s" % (fd.port, path),
            "--data-binary", "@" + src)
        self.assertEqual((rc, code, version), (0, "200", "2"))
        got = self.up.wait_for_request(lambda r: r.method == "POST")
        self.assertEqual(len(got.body), len(data))
        self.assertEqual(md5(got.body), md5(data))

    def test_streamed_body_reaches_the_upstream_whole(self):
        """Mode proxy: the body goes upstream as it arrives, flow-controlled
        per stream."""
        self.upload("/p?body=ok")

    def test_collected_body_reaches_the_upstream_whole(self):
        """Mode all: the body is read to its end before any leg starts."""
        self.upload("/all?body=ok")

    def download(self, tls):
        fd, tls_port = self.start()
        n = 5 * 1000 * 1000
        url = ("https://127.0.0.1:%d/p?size=%d" % (tls_port, n) if tls else
               "http://127.0.0.1:%d/p?size=%d" % (fd.port, n))
        rc, code, version, body = self.curl(url, tls=tls)
        self.assertEqual((rc, code, version), (0, "200", "2"))
        self.assertEqual(len(body), n)
        self.assertEqual(body, b"x" * n)
        e = fd.wait_access_log(lambda e: e.get("status") == 200)
        self.assertEqual((e["proto"], e["tls"]), ("HTTP/2.0", tls))

    def test_large_answer_over_h2c(self):
        self.download(tls=False)

    def test_large_answer_over_tls(self):
        self.download(tls=True)


if __name__ == "__main__":
    harness.main()
