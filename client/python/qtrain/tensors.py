"""numpy arrays <-> qtrain.v1.Tensor (dtype, shape, raw little-endian row-major bytes)."""

import numpy as np

from qtrain.v1 import tensor_pb2

_TO_WIRE = {
    np.dtype(np.float32): tensor_pb2.Tensor.F32,
    np.dtype(np.int32): tensor_pb2.Tensor.I32,
    np.dtype(np.int16): tensor_pb2.Tensor.I16,
    np.dtype(np.int8): tensor_pb2.Tensor.I8,
    np.dtype(np.uint8): tensor_pb2.Tensor.U8,
    np.dtype(np.float16): tensor_pb2.Tensor.F16,
}
_FROM_WIRE = {wire: dtype.newbyteorder("<") for dtype, wire in _TO_WIRE.items()}


def to_tensor(array, scale=None, offset=None) -> tensor_pb2.Tensor:
    """An array as a wire tensor. float64 becomes float32 and int64 int32 (the server's types);
    int64 values outside int32 raise ValueError. `scale` / `offset` (a number, or one per element
    of the last axis) are for model inputs: the server takes each value as v * scale + offset in
    float32, so uint8 images with scale=1/255 travel in a quarter of float32's bytes."""
    a = np.asarray(array)
    if a.dtype == np.float64:
        a = a.astype(np.float32)
    elif a.dtype == np.int64:
        if a.size and (a.min() < np.iinfo(np.int32).min or a.max() > np.iinfo(np.int32).max):
            raise ValueError("int64 values do not fit the wire's int32")
        a = a.astype(np.int32)
    native = a.dtype.newbyteorder("=")
    if native not in _TO_WIRE:
        raise ValueError(f"dtype {a.dtype} has no wire type (float32, int32, int16, int8, uint8, "
                         "float16)")
    a = np.ascontiguousarray(a, dtype=native.newbyteorder("<"))
    t = tensor_pb2.Tensor(dtype=_TO_WIRE[native], shape=a.shape, data=a.tobytes())
    if scale is not None:
        t.scale.extend(np.atleast_1d(np.asarray(scale, dtype=np.float32)).tolist())
    if offset is not None:
        t.offset.extend(np.atleast_1d(np.asarray(offset, dtype=np.float32)).tolist())
    return t


def from_tensor(tensor: tensor_pb2.Tensor) -> np.ndarray:
    """A wire tensor as a (writable) array of its dtype and shape."""
    if tensor.dtype not in _FROM_WIRE:
        raise ValueError(f"tensor has no numpy dtype (dtype {tensor.dtype})")
    dtype = _FROM_WIRE[tensor.dtype]
    shape = tuple(tensor.shape)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(tensor.data) != expected:
        raise ValueError(f"tensor of shape {shape} needs {expected} bytes, has {len(tensor.data)}")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
