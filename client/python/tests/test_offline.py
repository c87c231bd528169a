"""Tensor conversion and the safetensors reader, without a server."""

import json
import struct
import tempfile
import unittest

import numpy as np

import qtrain
from qtrain.v1 import tensor_pb2


def safetensors_bytes(tensors, metadata=None, header_override=None):
    header, body = {}, b""
    for name, (dtype, array) in tensors.items():
        raw = array.tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape),
                        "data_offsets": [len(body), len(body) + len(raw)]}
        body += raw
    if metadata:
        header["__metadata__"] = metadata
    if header_override is not None:
        header = header_override
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + body


class TensorTest(unittest.TestCase):
    def test_round_trip_keeps_dtype_shape_and_values(self):
        for a in (np.arange(12, dtype=np.float32).reshape(3, 4) / 7,
                  np.arange(-5, 5, dtype=np.int32).reshape(2, 5),
                  np.array([[1, 255]], dtype=np.uint8), np.array([-128, 127], dtype=np.int8)):
            b = qtrain.from_tensor(qtrain.to_tensor(a))
            self.assertEqual(b.dtype, a.dtype)
            np.testing.assert_array_equal(a, b)

    def test_wide_types_narrow_to_the_wire_types(self):
        self.assertEqual(qtrain.to_tensor(np.zeros(3)).dtype, tensor_pb2.Tensor.F32)
        self.assertEqual(qtrain.to_tensor(np.arange(3)).dtype, tensor_pb2.Tensor.I32)
        with self.assertRaisesRegex(ValueError, "int32"):
            qtrain.to_tensor(np.array([2**40]))
        with self.assertRaisesRegex(ValueError, "no wire type"):
            qtrain.to_tensor(np.zeros(2, dtype=np.complex64))

    def test_a_short_tensor_is_rejected(self):
        t = tensor_pb2.Tensor(dtype=tensor_pb2.Tensor.F32, shape=[2, 2], data=b"\0" * 12)
        with self.assertRaisesRegex(ValueError, "needs 16 bytes"):
            qtrain.from_tensor(t)


class SafetensorsTest(unittest.TestCase):
    def test_reads_tensors_and_metadata(self):
        w = np.arange(6, dtype=np.float32).reshape(2, 3)
        c = np.array([7], dtype=np.int32)
        arrays, meta = qtrain.load_safetensors(
            safetensors_bytes({"w": ("F32", w), "c": ("I32", c)}, {"step": "3"}))
        np.testing.assert_array_equal(arrays["w"], w)
        np.testing.assert_array_equal(arrays["c"], c)
        self.assertEqual(meta, {"step": "3"})

    def test_malformed_files_raise_value_error(self):
        good = safetensors_bytes({"w": ("F32", np.zeros(4, np.float32))})
        bad = [
            b"\1\2",
            struct.pack("<Q", 1000) + b"{}",
            struct.pack("<Q", 3) + b"{x}",
            safetensors_bytes({}, header_override={"w": {"dtype": "Q7", "shape": [1],
                                                         "data_offsets": [0, 4]}}),
            safetensors_bytes({}, header_override={"w": {"dtype": "F32", "shape": [2],
                                                         "data_offsets": [0, 4]}}),
            good[:-1],
        ]
        for data in bad:
            with self.assertRaises(ValueError, msg=data[:40]):
                qtrain.load_safetensors(data)


class DatasetTest(unittest.TestCase):
    def test_batches_cover_the_rows_and_check_lengths(self):
        x, y = np.arange(10, dtype=np.float32), np.arange(10, dtype=np.int32)
        got = list(qtrain.batches(x, y, batch_size=4))
        self.assertEqual([len(b[0]) for b in got], [4, 4, 2])
        np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
        with self.assertRaisesRegex(ValueError, "10 examples but y has 3"):
            list(qtrain.batches(x, y[:3], batch_size=4))

    def test_unknown_split_names_the_valid_ones(self):
        with self.assertRaisesRegex(ValueError, "'train', 't10k'"):
            qtrain.load_fashion_mnist("test")


class TokenTest(unittest.TestCase):
    def test_token_files_and_windows(self):
        with tempfile.TemporaryDirectory() as d:
            np.array([5, 6, 7, 8, 9, 10, 11, 12, 60000], np.uint16).tofile(d + "/t.bin")
            ids = qtrain.load_tokens(d + "/t.bin")
            self.assertEqual(ids.dtype, np.int32)
            x, y = qtrain.token_windows(ids, 4)
            np.testing.assert_array_equal(x, [[5, 6, 7, 8], [9, 10, 11, 12]])
            np.testing.assert_array_equal(y, [[6, 7, 8, 9], [10, 11, 12, 60000]])
            x, y = qtrain.token_windows(ids, 4, labels_are_inputs=True)
            np.testing.assert_array_equal(x, y)
            np.save(d + "/t.npy", np.array([3, 1, 4], np.int64))
            np.testing.assert_array_equal(qtrain.load_tokens(d + "/t.npy"), [3, 1, 4])
            np.save(d + "/f.npy", np.zeros(3, np.float32))
            with self.assertRaisesRegex(ValueError, "not a 1-D integer array"):
                qtrain.load_tokens(d + "/f.npy")
            with self.assertRaisesRegex(ValueError, "'uint16', 'uint32'"):
                qtrain.load_tokens(d + "/t.bin", dtype="int8")
        with self.assertRaisesRegex(ValueError, "fewer than seq_len=8 \\+ 1"):
            qtrain.token_windows([1, 2, 3], 8)

    def test_padded_sequences_as_the_cli_cuts_lines(self):
        x, y = qtrain.pad_sequences([[97, 98], [97, 98, 99, 100, 101], [120]], 4, pad_id=0)
        np.testing.assert_array_equal(x, [[97, 98, 0, 0], [97, 98, 99, 100], [120, 0, 0, 0]])
        np.testing.assert_array_equal(y, [[98, 0, 0, 0], [98, 99, 100, 101], [0, 0, 0, 0]])
        x, y = qtrain.pad_sequences([[7, 8]], 3, pad_id=2, labels_are_inputs=True)
        np.testing.assert_array_equal(y, [[7, 8, 2]])
        with self.assertRaisesRegex(ValueError, "sequence 1 is empty"):
            qtrain.pad_sequences([[1], []], 3, pad_id=0)


class PresetTest(unittest.TestCase):
    def test_lookup_gives_fresh_copies_and_lists_names(self):
        a = qtrain.presets.lookup("rules", "qat-int8")
        a["rules"].clear()
        self.assertEqual(len(qtrain.presets.QAT_INT8["rules"]), 1)
        self.assertEqual(qtrain.presets.mlp(classes=3)["body"]["sequential"]["layers"][-1],
                         {"name": "head", "linear": {"features": 3}})
        with self.assertRaisesRegex(ValueError, "adamw, sgd, momentum"):
            qtrain.presets.lookup("optimizers", "adagrad")


if __name__ == "__main__":
    unittest.main()
