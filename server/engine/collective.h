// Collective: the reductions a data-parallel training step runs across its ranks (numerics of
// data parallelism: docs/scaling.md). The engine sees only this interface; server/cluster
// implements it on Gloo. Every rank calls the same reductions in the same order with the same
// sizes; results are bitwise identical on every rank.
//
// Thread-safety: one caller at a time (a step's main thread, or its GradReducer's thread while
// the backward pass runs).
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace qtrain::engine {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;

  // In place: each tensor (f32) ← Σ over ranks of (weight_r · tensor_r); the tensors travel
  // together. Unavailable (naming the collective) when a rank has gone or timed out; the data
  // is then undefined and the group unusable. InvalidArgument for a tensor this collective
  // cannot reach (not f32, or on a device it does not serve).
  virtual absl::Status AllReduceSum(absl::Span<Tensor* const> tensors, float weight) = 0;
  virtual absl::Status AllReduceSum(absl::Span<double> values) = 0;
};

}  // namespace qtrain::engine
