"""Starts the real qtrain-server (build/bin, from $QTRAIN_BUILD_DIR) on 127.0.0.1:0 for tests."""

import os
import re
import subprocess
import tempfile
import time

BUILD_DIR = os.environ.get("QTRAIN_BUILD_DIR", "build")


class Server:
    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="qtrain_py_")
        self.log = open(os.path.join(self.dir.name, "server.log"), "w+")
        self.proc = subprocess.Popen(
            [os.path.join(BUILD_DIR, "bin", "qtrain-server"), "--listen=127.0.0.1:0",
             "--metrics_listen=127.0.0.1:0", f"--data_dir={self.dir.name}/data"],
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
