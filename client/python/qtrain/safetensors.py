"""A small, dependency-free reader and writer of safetensors files (the format of qtrain
checkpoints, and of the float weights ImportWeights takes).

Layout: an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape,
data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the tensor bytes.
"""

import json
import os
import struct

import numpy as np

_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "BOOL": "?",
}
_READ_ONLY = {"BF16": "<u2"}  # read (as float32), never written


_NAMES = {np.dtype(v).str: k for k, v in _DTYPES.items()}  # "<f4" -> "F32", "|u1" -> "U8"


def save_safetensors(tensors, path=None, metadata=None):
    """Serializes {name: array-like} (numpy arrays; anything np.asarray takes, such as a PyTorch
    tensor's .numpy()) as safetensors bytes, little-endian and C-ordered, tensors in name order.
    Writes them to `path` when given; returns the bytes. Raises ValueError for a dtype that
    safetensors has no name for."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(np.asarray(tensors[name]))
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        tag = _NAMES.get(a.dtype.str)
        if tag is None:
            raise ValueError(f"safetensors: {name!r} has dtype {a.dtype}, which has no tag")
        blob = a.tobytes()
        header[name] = {"dtype": tag, "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    data = struct.pack("<Q", len(text)) + text + b"".join(blobs)
    if path is not None:
        with open(path, "wb") as f:
            f.write(data)
    return data


def load_safetensors(data):
    """Parses safetensors bytes (or reads a path) into ({name: ndarray}, metadata dict).

    Raises ValueError for a malformed file: bad header length or JSON, unknown dtype, offsets
    outside the data or sizes that disagree with the shape.
    """
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            data = f.read()
    data = memoryview(bytes(data))
    if len(data) < 8:
        raise ValueError("safetensors: shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(f"safetensors: header length {n} exceeds the file ({len(data)} bytes)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"safetensors: header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise ValueError("safetensors: header is not a JSON object")
    metadata = header.pop("__metadata__", {}) or {}
    body = data[8 + n:]
    arrays = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES.get(info["dtype"]) or _READ_ONLY[info["dtype"]])
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"safetensors: bad entry for {name!r}: {info!r}") from None
        count = int(np.prod(shape, dtype=np.int64))
        if not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
            raise ValueError(f"safetensors: {name!r} offsets [{begin}, {end}) do not fit "
                             f"shape {shape} {info['dtype']} in {len(body)} data bytes")
        arrays[name] = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape).copy()
        if info["dtype"] == "BF16":  # the high half of a float32: widening is exact
            arrays[name] = (arrays[name].astype(np.uint32) << 16).view(np.float32)
    return arrays, metadata
