#include "kernels/rng.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace qtrain {

absl::StatusOr<StochasticRounding> ParseStochasticRounding(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  if (lower.empty() || lower == "none") {
    return StochasticRounding::kNone;
  }
  if (lower == "uniform") {
    return StochasticRounding::kUniform;
  }
  if (lower == "low_bit_uniform") {
    return StochasticRounding::kLowBitUniform;
  }
  return absl::InvalidArgumentError(absl::StrCat("bwd_stochastic_rounding \"", name,
                                                 "\" is unknown; expected uniform or "
                                                 "low_bit_uniform"));
}

float CounterRng::Noise(StochasticRounding mode, uint64_t counter) const {
  switch (mode) {
    case StochasticRounding::kNone:
      return 0.0f;
    case StochasticRounding::kUniform:
      return static_cast<float>(Bits(counter) >> 40) * 0x1p-24f - 0.5f;
    case StochasticRounding::kLowBitUniform:
      return static_cast<float>(Bits(counter) & 0xFF) / 256.0f - 0.5f + 0x1p-9f;
  }
  return 0.0f;
}

}  // namespace qtrain
