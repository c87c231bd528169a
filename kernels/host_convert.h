// Host-side reading of tensors that arrive as bytes (the wire, checkpoints): widening to f32
// with an affine map, and finiteness checks. The wire conversion and the store use these; the
// engine reaches tensor data only through its Backend.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace qtrain {

// How S16 storage reads: as int16 values or as IEEE half / bfloat16 bit patterns.
enum class S16Meaning { kInt16, kF16, kBf16 };

// raw (u8, s8, s16 read as `s16`, f32; host) as f32, each element times scale and plus offset
// (each empty, one value, or one per element of the last axis: the caller checks the counts).
// InvalidArgument "element i is v after its dtype, scale and offset (must be finite)" for the
// first non-finite result.
absl::StatusOr<Tensor> WidenToF32(const Tensor& raw, S16Meaning s16, absl::Span<const float> scale,
                                  absl::Span<const float> offset);

// OK when every element of a host f32 tensor is finite; else InvalidArgument "element i is v".
absl::Status CheckFiniteHost(const Tensor& t);

}  // namespace qtrain
