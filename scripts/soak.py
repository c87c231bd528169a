#!/usr/bin/python3
"""Soak test: many concurrent streams against one qtrain-server for a long time, sampling the
server's resident memory. Passes when every stream call succeeds (or fails with a code the load
explains) and RSS stays flat: the last quarter's mean within --rss-growth of the second
quarter's (the first quarter is warm-up: allocator arenas, primitive caches).

    PYTHONPATH=build/python scripts/soak.py --server build/bin/qtrain-server --streams 64 --minutes 10

Streams rotate over Train, Evaluate and Calibrate on --sessions sessions (so several streams
share each session); every stream is short (a few batches) and reopened, so the run also churns
reactors, session queues and the memory budget's leases.
"""
import argparse
import os
import re
import sys
import tempfile
import threading
import time

import numpy as np

from qtrain import Client, QtrainError
from server_process import start_server

MODEL = {"input": {"shape": [32]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 64}}, {"activation": {"kind": "RELU"}}, {"linear": {"features": 10}}]}}}
RULES = {"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": True}]}


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def stream_loop(address, sessions, deadline, seed, counts, lock):
    rng = np.random.default_rng(seed)
    client = Client(address)
    while time.time() < deadline:
        sid = sessions[rng.integers(len(sessions))]
        kind = rng.choice(["train", "train", "evaluate", "calibrate"])
        n = int(rng.integers(1, 6))
        xs = [rng.standard_normal((32, 32)).astype(np.float32) for _ in range(n)]
        pairs = [(x, np.argmax(x[:, :10], axis=1).astype(np.int32)) for x in xs]
        try:
            if kind == "train":
                for _ in client.train(sid, iter(pairs)):
                    pass
            elif kind == "evaluate":
                client.evaluate(sid, iter(pairs))
            else:
                client.calibrate(sid, iter(xs))
            key = f"{kind} ok"
        except QtrainError as e:
            key = f"{kind} {e.code.name}"
        with lock:
            counts[key] = counts.get(key, 0) + 1
    client.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="build/bin/qtrain-server")
    ap.add_argument("--streams", type=int, default=64)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rss-growth", type=float, default=0.05,
                    help="largest allowed growth of RSS between the second and last quarter")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="qtrain-soak-")
    proc, address = start_server(args.server, f"{work}/data", os.path.join(work, "server.log"),
                                 ["--autosave_steps=200"])
    with Client(address) as c:
        sessions = [c.create_session(f"soak{i}", model=MODEL, rules=RULES).session_id
                    for i in range(args.sessions)]
    counts, lock = {}, threading.Lock()
    started = time.time()
    deadline = started + args.minutes * 60
    threads = [threading.Thread(target=stream_loop,
                                args=(address, sessions, deadline, i, counts, lock))
               for i in range(args.streams)]
    for t in threads:
        t.start()
    samples = []
    while time.time() < deadline:
        samples.append((time.time() - started, rss_kib(proc.pid)))
        print(f"t={samples[-1][0]:6.0f} s  rss={samples[-1][1] / 1024:7.1f} MiB  "
              f"calls={sum(counts.values())}", flush=True)
        time.sleep(min(10.0, max(0.5, args.minutes * 60 / 60)))
    for t in threads:
        t.join()
    samples.append((time.time() - started, rss_kib(proc.pid)))
    proc.terminate()
    proc.wait()
    q = max(1, len(samples) // 4)
    second = np.mean([r for _, r in samples[q:2 * q]])
    last = np.mean([r for _, r in samples[-q:]])
    growth = (last - second) / second
    failed = {k: v for k, v in counts.items() if not k.endswith(" ok")}
    print(f"soak: {args.streams} streams on {args.sessions} sessions for "
          f"{samples[-1][0] / 60:.1f} min: {sum(counts.values())} stream calls; RSS "
          f"{samples[0][1] / 1024:.0f} -> max {max(r for _, r in samples) / 1024:.0f} MiB, "
          f"second-quarter mean {second / 1024:.1f} MiB, last-quarter mean {last / 1024:.1f} MiB "
          f"({growth * 100:+.1f}%)")
    print("  calls:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    ok = growth <= args.rss_growth and not failed
    if failed:
        print("  FAILED calls:", failed)
    if growth > args.rss_growth:
        print(f"  RSS grew more than {args.rss_growth * 100:.0f}%")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
