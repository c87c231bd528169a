// Rotary angle tables, following transformers' ROPE_INIT_FUNCTIONS (default, linear, llama3):
// inv_freq in float32 as torch computes it, angles position · inv_freq rounded to float32, their
// cos / sin rounded once.
#include "server/engine/modules/rotary_table.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"

namespace qtrain::engine {
namespace {

absl::Status Bad(const std::string& path, const std::string& what) {
  return absl::InvalidArgumentError(absl::StrCat("module \"", path, "\": rotary ", what));
}

}  // namespace

absl::StatusOr<RotaryTable> MakeRotaryTable(const std::string& path, const proto::Rotary& r,
                                            int64_t positions, int64_t head_dim) {
  if (head_dim % 2 != 0) {
    return Bad(path, absl::StrCat("embeddings need an even head_dim, got ", head_dim));
  }
  if (r.theta() < 0 || !std::isfinite(r.theta())) {
    return Bad(path, absl::StrCat("theta must be positive, got ", r.theta()));
  }
  const float theta = r.theta() == 0 ? 10000.0f : static_cast<float>(r.theta());
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int64_t i = 0; i < half; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  const auto need_positive = [&](const char* field, double v) -> absl::Status {
    if (!(v > 0) || !std::isfinite(v)) {
      return Bad(path, absl::StrCat("scaling needs ", field, " > 0, got ", v));
    }
    return absl::OkStatus();
  };
  switch (r.scaling()) {
    case proto::Rotary::NONE:
      break;
    case proto::Rotary::LINEAR: {
      absl::Status s = need_positive("factor", r.factor());
      if (!s.ok()) return s;
      for (float& f : inv_freq) f /= static_cast<float>(r.factor());
      break;
    }
    case proto::Rotary::LLAMA3: {
      for (auto [field, v] : {std::pair<const char*, double>{"factor", r.factor()},
                              {"low_freq_factor", r.low_freq_factor()},
                              {"high_freq_factor", r.high_freq_factor()},
                              {"original_max_position_embeddings",
                               static_cast<double>(r.original_max_position_embeddings())}}) {
        absl::Status s = need_positive(field, v);
        if (!s.ok()) return s;
      }
      if (r.high_freq_factor() <= r.low_freq_factor()) {
        return Bad(path,
                   absl::StrCat("llama3 scaling needs high_freq_factor > low_freq_factor, got ",
                                r.high_freq_factor(), " and ", r.low_freq_factor()));
      }
      const float factor = static_cast<float>(r.factor());
      const float low = static_cast<float>(r.low_freq_factor());
      const float high = static_cast<float>(r.high_freq_factor());
      const float old_len = static_cast<float>(r.original_max_position_embeddings());
      const float low_freq_wavelen = old_len / low, high_freq_wavelen = old_len / high;
      for (float& f : inv_freq) {
        const float wavelen = 2.0f * static_cast<float>(M_PI) / f;
        if (wavelen > low_freq_wavelen) {
          f /= factor;                              // long wavelengths: interpolated
        } else if (wavelen >= high_freq_wavelen) {  // in between: blended
          const float smooth = (old_len / wavelen - low) / (high - low);
          f = (1.0f - smooth) * f / factor + smooth * f;
        }  // short wavelengths: kept
      }
      break;
    }
    default:
      return Bad(path, absl::StrCat("scaling ", static_cast<int>(r.scaling()),
                                    " is not one this build knows (NONE = 0, LINEAR = 1, "
                                    "LLAMA3 = 2)"));
  }
  // Host tables built once per model (constants, as the weights it loads).
  std::vector<float> cos(static_cast<size_t>(positions * half)), sin(cos.size());
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      cos[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return RotaryTable{Tensor::FromFloats({positions, half}, cos),
                     Tensor::FromFloats({positions, half}, sin)};
}

}  // namespace qtrain::engine
