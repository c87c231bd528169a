// Wire tensors (qtrain.v1.Tensor) ⇄ engine tensors. The only place raw request bytes become
// engine tensors, so every check a hostile client could trip lives here.
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "qtrain/v1/tensor.pb.h"

namespace qtrain::rpc {

// Validates and converts. InvalidArgument naming `field` and the value: unspecified or unknown
// dtype (F16 / BF16 and scale / offset are for InputsFromWire only), negative dims, rank above
// 8, a byte count that does not match dtype × shape, or (f32) a NaN / infinity;
// ResourceExhausted above `max_bytes` (the wire bytes).
absl::StatusOr<Tensor> FromWire(const v1::Tensor& wire, const std::string& field,
                                int64_t max_bytes);

// A FLOAT model's inputs: FromWire, then U8 / I8 / I16 / F16 / BF16 values widened to F32 and
// the wire tensor's scale and offset applied (v · scale[c] + offset[c], c along the last axis).
// I32 (token ids) pass through unchanged. InvalidArgument naming `field`: scale or offset of
// another length than 1 or the last dim, non-finite scale or offset, a result that is not
// finite, scale or offset on I32 tokens.
absl::StatusOr<Tensor> InputsFromWire(const v1::Tensor& wire, const std::string& field,
                                      int64_t max_bytes);

// The wire form of `t` (little-endian hosts only, as qtrain's targets are).
v1::Tensor ToWire(const Tensor& t);

}  // namespace qtrain::rpc
