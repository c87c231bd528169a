#!/usr/bin/python3
"""Crash-cycle test: kill -9 qtrain-server while clients create, train, save, upload and delete
sessions, restart it on the same data dir, and check that nothing the server acknowledged was
lost (docs/api.md, "Durability"). Prints one line per cycle and a summary; exits 1 on any loss.

    PYTHONPATH=build/python scripts/crash_cycles.py --server build/bin/qtrain-server --cycles 100

What counts as acknowledged, and what is then checked after the restart:
  CreateSession answered OK          the session exists (at step >= 0)
  Train response with last_durable_step d   the session's step is >= d
  SaveCheckpoint answered step s      the session's step is >= s
  UploadCheckpoint answered step s    the session exists at step >= s; exactly s when nothing
                                      else was sent to the session afterwards
  DeleteSession answered OK           the session does not exist
Operations in flight at the kill are not acknowledged: their sessions are re-read, not checked.
"""
import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from qtrain import Client, QtrainError
from server_process import start_server

FLAGS = ["--autosave_steps=3", "--max_sessions=64"]
MODEL = {"input": {"shape": [8]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 16}}, {"activation": {"kind": "RELU"}}, {"linear": {"features": 4}}]}}}


def batches(rng, n):
    for _ in range(n):
        x = rng.standard_normal((16, 8)).astype(np.float32)
        yield x, np.argmax(x[:, :4], axis=1).astype(np.int32)


class Ledger:
    """What the server acknowledged, per session: ("exists", min_step, exact_step or None),
    ("deleted",) or ("unknown",) while an operation on it is unanswered."""

    def __init__(self):
        self.lock = threading.Lock()
        self.state = {}
        self.acks = 0
        self.counts = {}  # "create ok", "train RESOURCE_EXHAUSTED", ...

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def live(self, prefix):
        with self.lock:
            return [s for s, st in self.state.items() if st[0] == "exists" and s.startswith(prefix)]

    def begin(self, sid, op):
        with self.lock:
            prev = self.state.get(sid)
            self.state[sid] = ("unknown", op, prev)

    def refused(self, sid):
        """The server answered the operation on `sid` with an error: nothing changed."""
        with self.lock:
            st = self.state.get(sid)
            if st and st[0] == "unknown":
                if st[2] is None:
                    del self.state[sid]
                else:
                    self.state[sid] = st[2]

    def ack(self, sid, state):
        with self.lock:
            self.state[sid] = state
            self.acks += 1

    def check(self, observed):
        """Violations of the ledger by `observed` ({id: step}); then adopts what was observed."""
        bad = []
        with self.lock:
            for sid, st in self.state.items():
                if st[0] == "deleted" and sid in observed:
                    bad.append(f"{sid}: deleted (acknowledged) but restored at step {observed[sid]}")
                elif st[0] == "exists":
                    if sid not in observed:
                        bad.append(f"{sid}: acknowledged at step >= {st[1]} but missing")
                    elif observed[sid] < st[1]:
                        bad.append(f"{sid}: acknowledged step {st[1]}, restored {observed[sid]}")
                    elif st[2] is not None and observed[sid] != st[2]:
                        bad.append(f"{sid}: uploaded at step {st[2]}, restored {observed[sid]}")
            self.state = {sid: ("exists", step, None) for sid, step in observed.items()}
        return bad


def worker(address, ledger, rng, stop, prefix, cycle, checkpoints):
    """Random operations on this worker's own sessions (ids starting with `prefix`), one at a
    time, so that each session's acknowledgements arrive in the order they happened."""
    client = Client(address)
    n = 0
    while not stop.is_set():
        live = ledger.live(prefix)
        ops = ["create", "train", "train", "save", "upload", "delete"]
        op = rng.choice(ops + ["delete"] * max(0, len(live) - 3))
        if not live or (op == "upload" and not checkpoints):
            op = "create"
        sid = rng.choice(live) if live else ""
        if op == "create" or (op == "upload" and rng.random() < 0.5):  # a new id
            sid = f"{prefix}c{cycle}_{n}"
            n += 1
        ledger.begin(sid, op)
        try:
            if op == "create":
                client.create_session(sid, model=MODEL, rules="qat-int8", seed=n)
                ledger.ack(sid, ("exists", 0, 0))
            elif op == "upload":
                info = client.upload_checkpoint(sid, checkpoints[rng.integers(len(checkpoints))])
                ledger.ack(sid, ("exists", info.step, info.step))
            elif op == "train":
                durable = 0
                for r in client.train(sid, batches(rng, int(rng.integers(1, 8)))):
                    durable = max(durable, r.last_durable_step)
                ledger.ack(sid, ("exists", durable, None))
            elif op == "save":
                info = client.save_checkpoint(sid)
                ledger.ack(sid, ("exists", info.step, None))
                checkpoints.append(client.download_checkpoint(sid))
            elif op == "delete":
                client.delete_session(sid)
                ledger.ack(sid, ("deleted",))
            ledger.count(f"{op} ok")
        except QtrainError as e:
            ledger.count(f"{op} {e.code.name}")
            if e.code.name in ("UNAVAILABLE", "CANCELLED", "DEADLINE_EXCEEDED", "UNKNOWN",
                               "INTERNAL"):
                break  # the server was killed: what was in flight stays "unknown"
            ledger.refused(sid)  # answered with an error: nothing changed
    client.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--server", default="build/bin/qtrain-server")
    ap.add_argument("--cycles", type=int, default=100)
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the data dir")
    ap.add_argument("--self-check", action="store_true",
                    help="delete one session's checkpoint before the final restart and expect "
                         "the check to report it (proves the checker can fail)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    work = tempfile.mkdtemp(prefix="qtrain-crash-")
    data = os.path.join(work, "data")
    ledger = Ledger()
    checkpoints = []
    losses = []
    started = time.time()
    for cycle in range(args.cycles):
        proc, address = start_server(args.server, data, os.path.join(work, "server.log"), FLAGS)
        with Client(address) as c:
            observed = {s.session_id: s.step for s in c.list_sessions()}
        bad = ledger.check(observed)
        losses += [f"cycle {cycle}: {b}" for b in bad]
        stop = threading.Event()
        threads = [threading.Thread(target=worker, args=(
            address, ledger, np.random.default_rng(int(rng.integers(1 << 30))), stop, f"w{i}",
            cycle, checkpoints)) for i in range(args.clients)]
        for t in threads:
            t.start()
        time.sleep(float(rng.uniform(0.2, 1.5)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        del checkpoints[:-8]
        print(f"cycle {cycle + 1}/{args.cycles}: {len(observed)} sessions restored, "
              f"{len(bad)} losses, {ledger.acks} acknowledgements so far", flush=True)
    if args.self_check:
        files = sorted(f for f in os.listdir(os.path.join(data, "sessions"))
                       if f.endswith(".safetensors"))
        os.remove(os.path.join(data, "sessions", files[0]))
        print(f"self-check: removed {files[0]}")
    proc, address = start_server(args.server, data, os.path.join(work, "server.log"), FLAGS)
    with Client(address) as c:
        observed = {s.session_id: s.step for s in c.list_sessions()}
    losses += [f"final: {b}" for b in ledger.check(observed)]
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    print(f"crash_cycles: {args.cycles} kill -9 cycles in {time.time() - started:.0f} s, "
          f"{ledger.acks} acknowledged operations, {len(losses)} acknowledged losses")
    print("  operations:", ", ".join(f"{k} {v}" for k, v in sorted(ledger.counts.items())))
    for line in losses:
        print("  LOST", line)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if args.self_check:
        sys.exit(0 if losses else 1)
    sys.exit(1 if losses else 0)


if __name__ == "__main__":
    main()
