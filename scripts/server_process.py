"""Starts qtrain-server for the long-running scripts (crash_cycles.py, soak.py)."""
import re
import subprocess
import sys
import time


def start_server(server, data_dir, log_path, flags=()):
    """Runs `server` on 127.0.0.1:0 with `data_dir`, its output in `log_path`; returns
    (process, "127.0.0.1:PORT") once it listens, or exits with its log."""
    log = open(log_path, "w")
    proc = subprocess.Popen([server, "--listen=127.0.0.1:0", "--metrics_listen=",
                             f"--data_dir={data_dir}", *flags],
                            stdout=log, stderr=subprocess.STDOUT)
    for _ in range(500):
        with open(log_path) as f:
            m = re.search(r"listening on port (\d+)", f.read())
        if m:
            return proc, f"127.0.0.1:{m.group(1)}"
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    with open(log_path) as f:
        sys.exit(f"qtrain-server did not start:\n{f.read()}")
