"""Starts the real qtrain-server (build/bin, from $QTRAIN_BUILD_DIR) on 127.0.0.1:0 for tests."""

import os
import re
import subprocess
import tempfile
import time
import unittest

BUILD_DIR = os.environ.get("QTRAIN_BUILD_DIR", "build")


class Server:
    def __init__(self, flags=()):
        self.dir = tempfile.TemporaryDirectory(prefix="qtrain_py_")
        self.log = open(os.path.join(self.dir.name, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [os.path.join(BUILD_DIR, "bin", "qtrain-server"), "--listen=127.0.0.1:0",
             "--metrics_listen=127.0.0.1:0", f"--data_dir={self.dir.name}/data", *flags],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while time.time() < deadline:
            self.log.seek(0)
            m = re.search(r"listening on port (\d+)", self.log.read())
            if m:
                self.address = f"127.0.0.1:{m.group(1)}"
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("qtrain-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()
        self.dir.cleanup()


def make_certificates(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate (openssl, EC P-256);
    returns {name: path} for ca.pem, server.pem/.key and client.pem/.key."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
        "-subj", "/CN=test-ca")
    with open(os.path.join(directory, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        extra = ["-extfile", "san.ext"] if name == "server" else []
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-out", f"{name}.pem", *extra)
    return {n: os.path.join(directory, n) for n in
            ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class ServerCase(unittest.TestCase):
    """A real server for the test class (self.server), and a client of it (self.client)."""

    @classmethod
    def setUpClass(cls):
        import qtrain  # the package under test, on PYTHONPATH
        cls.server = Server()
        cls.client = qtrain.Client(cls.server.address)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.stop()
