// Counter-based random numbers for stochastic rounding (numerics.md §5.3): value i of stream s
// under seed k is a pure function of (k, s, i), so runs are reproducible and noise can be
// generated in any order or in parallel.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qtrain {

enum class StochasticRounding : uint8_t { kNone, kUniform, kLowBitUniform };

// "" or "none", "uniform", "low_bit_uniform". InvalidArgument naming the value otherwise.
absl::StatusOr<StochasticRounding> ParseStochasticRounding(absl::string_view name);

class CounterRng {
 public:
  CounterRng(uint64_t seed, uint64_t stream) : key_(Mix(seed ^ Mix(stream + kGolden))) {}

  // 64 random bits for `counter` (SplitMix64 finaliser over key + counter).
  uint64_t Bits(uint64_t counter) const { return Mix(key_ + counter * kGolden); }

  // Rounding noise: kUniform U(-0.5, 0.5) with 24-bit resolution; kLowBitUniform
  // r/256 - 0.5 + 2^-9 with r a random byte; kNone 0.
  float Noise(StochasticRounding mode, uint64_t counter) const;

 private:
  static constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;
  static uint64_t Mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t key_;
};

}  // namespace qtrain
