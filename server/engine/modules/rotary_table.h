// The angle tables of rotary position embeddings (model.proto's Rotary): cos and sin of
// position · inv_freq for positions 0..T−1, as Hugging Face computes them (inv_freq and the
// angles in float32), with HF's `linear` and `llama3` rope scaling. Used by attention.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/config.h"

namespace qtrain::engine {

struct RotaryTable {
  Tensor cos, sin;  // (positions, head_dim / 2)
};

// InvalidArgument naming `path` and the field for an odd head_dim, a negative theta, or scaling
// parameters the scaling type needs and lacks.
absl::StatusOr<RotaryTable> MakeRotaryTable(const std::string& path, const proto::Rotary& rotary,
                                            int64_t positions, int64_t head_dim);

}  // namespace qtrain::engine
