"""Data helpers for examples and tests: IDX files (MNIST / Fashion-MNIST, gzipped or not), token
ids for language models (.npy and nanoGPT .bin files, windows, padded variable-length sequences)
and a batch iterator over numpy arrays."""

import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def load_idx(path):
    """An IDX file of unsigned bytes as a uint8 array of its dimensions."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] or raw[1] or raw[2] != 8 or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    rank = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(rank))
    body = raw[4 + 4 * rank:]
    if len(body) != int(np.prod(dims)):
        raise ValueError(f"{path}: {len(body)} data bytes, the header says {int(np.prod(dims))}")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def load_fashion_mnist(split="train", limit=None, directory=FASHION_MNIST_DIR, dtype=np.float32):
    """(images (N, 28, 28, 1), labels int32 (N,)) of a Fashion-MNIST split ("train" or "t10k"):
    float32 in [0, 1], or with dtype=np.uint8 the pixels as stored (send them with
    input_scale=1/255: a quarter of the bytes)."""
    if split not in ("train", "t10k"):
        raise ValueError(f"split={split!r} is not one of 'train', 't10k'")
    images = load_idx(os.path.join(directory, f"{split}-images-idx3-ubyte.gz"))
    labels = load_idx(os.path.join(directory, f"{split}-labels-idx1-ubyte.gz"))
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be >= 1 (or None for all)")
    n = len(labels) if limit is None else min(limit, len(labels))
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(images[:n, :, :, None]), labels[:n].astype(np.int32)
    x = images[:n, :, :, None].astype(np.float32) / 255.0
    return x, labels[:n].astype(np.int32)


def batches(x, y=None, batch_size=128, epochs=1, shuffle=False, seed=0):
    """Yields (x_batch, y_batch) — or x_batch alone when y is None — for `epochs` passes."""
    if batch_size < 1 or epochs < 0:
        raise ValueError(f"batch_size={batch_size} must be >= 1 and epochs={epochs} >= 0")
    if y is not None and len(y) != len(x):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)}")
    rng = np.random.default_rng(seed)
    n = len(x)
    for _ in range(epochs):
        order = rng.permutation(n) if shuffle else np.arange(n)
        for at in range(0, n, batch_size):
            rows = order[at:at + batch_size]
            yield x[rows] if y is None else (x[rows], y[rows])


def load_tokens(path, dtype=None):
    """The token ids of a pre-tokenized file as int32 (N,): FILE.npy (a 1-D integer array, as
    numpy.save writes it) or FILE.bin (nanoGPT's raw ids, dtype "uint16" by default or
    "uint32")."""
    if path.endswith(".npy"):
        if dtype is not None:
            raise ValueError(f"dtype={dtype!r} applies to .bin files only ({path} is .npy)")
        ids = np.load(path, allow_pickle=False)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise ValueError(f"{path} holds {ids.dtype} {ids.shape}, not a 1-D integer array")
    else:
        dtype = dtype or "uint16"
        if dtype not in ("uint16", "uint32"):
            raise ValueError(f"dtype={dtype!r} is not one of 'uint16', 'uint32'")
        ids = np.fromfile(path, dtype="<" + {"uint16": "u2", "uint32": "u4"}[dtype])
    if ids.size and (ids.min() < 0 or ids.max() >= 2 ** 31):
        raise ValueError(f"{path} holds ids outside [0, 2^31)")
    return ids.astype(np.int32)


def token_windows(ids, seq_len, labels_are_inputs=False):
    """(inputs, labels), int32 (N, seq_len): `ids` cut into whole windows. Labels are the next ids,
    or the window's own ids for a session whose loss shifts labels (HF's causal LMs)."""
    ids = np.asarray(ids, dtype=np.int32)
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be >= 1")
    shift = 0 if labels_are_inputs else 1
    n = (len(ids) - shift) // seq_len if len(ids) >= seq_len + shift else 0
    if n == 0:
        raise ValueError(f"{len(ids)} ids are fewer than seq_len={seq_len}" + (" + 1" if shift else ""))
    inputs = ids[:n * seq_len].reshape(n, seq_len)
    return inputs, ids[shift:n * seq_len + shift].reshape(n, seq_len)


def pad_sequences(sequences, seq_len, pad_id, labels_are_inputs=False):
    """(inputs, labels), int32 (N, seq_len): each sequence of ids cut to seq_len and right-padded
    with pad_id — the session's input.pad_id, so the server masks the padding (never attended to,
    not counted by the loss). Labels are the sequence's own ids (labels_are_inputs, HF's causal
    LMs) or the next ids, pad_id after a sequence's last id; as `qtrain train --sequences=lines`."""
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len} must be >= 1")
    sequences = [np.asarray(s, dtype=np.int64).ravel() for s in sequences]
    if not sequences:
        raise ValueError("no sequences")
    inputs = np.full((len(sequences), seq_len), pad_id, dtype=np.int32)
    labels = np.full((len(sequences), seq_len), pad_id, dtype=np.int32)
    for i, s in enumerate(sequences):
        if s.size == 0:
            raise ValueError(f"sequence {i} is empty")
        n = min(len(s), seq_len)
        inputs[i, :n] = s[:n]
        if labels_are_inputs:
            labels[i, :n] = s[:n]
        else:
            nxt = s[1:n + 1]
            labels[i, :len(nxt)] = nxt
    return inputs, labels
