// Deterministic parameter initialisation (Flax defaults), seeded by the session seed and the
// parameter's name, so a model's initial weights do not depend on construction order.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/tensor.h"

namespace qtrain::engine {

// Truncated normal (±2σ) with variance 1/fan_in: flax.linen's default kernel init (lecun_normal).
Tensor LecunNormal(const Shape& shape, int64_t fan_in, uint64_t seed, const std::string& name);
// Normal(0, stddev²).
Tensor NormalInit(const Shape& shape, float stddev, uint64_t seed, const std::string& name);
Tensor Constant(const Shape& shape, float value);

// A 64-bit seed for the stream `name` under `seed` (stable across runs and platforms).
uint64_t StreamSeed(uint64_t seed, const std::string& name);

}  // namespace qtrain::engine
