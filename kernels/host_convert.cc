#include "kernels/host_convert.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace qtrain {

absl::StatusOr<Tensor> WidenToF32(const Tensor& raw, S16Meaning s16, absl::Span<const float> scale,
                                  absl::Span<const float> offset) {
  Tensor out = Tensor::Empty(DType::kF32, raw.shape());
  const int64_t n = raw.numel();
  const int64_t last = raw.rank() == 0 ? 1 : raw.shape().back();
  float* o = out.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    float v;
    switch (raw.dtype()) {
      case DType::kU8:
        v = static_cast<float>(raw.data<uint8_t>()[i]);
        break;
      case DType::kS8:
        v = static_cast<float>(raw.data<int8_t>()[i]);
        break;
      case DType::kS16: {
        const auto bits = static_cast<uint16_t>(raw.data<int16_t>()[i]);
        v = s16 == S16Meaning::kF16    ? HalfToFloat(bits)
            : s16 == S16Meaning::kBf16 ? Bf16ToFloat(bits)
                                       : static_cast<float>(raw.data<int16_t>()[i]);
        break;
      }
      default:
        v = raw.data<float>()[i];
    }
    const int64_t c = last > 0 ? i % last : 0;
    if (!scale.empty()) v *= scale[scale.size() == 1 ? 0 : static_cast<size_t>(c)];
    if (!offset.empty()) v += offset[offset.size() == 1 ? 0 : static_cast<size_t>(c)];
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "element ", i, " is ", v, " after its dtype, scale and offset (must be finite)"));
    }
    o[i] = v;
  }
  return out;
}

absl::Status CheckFiniteHost(const Tensor& t) {
  const float* v = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(absl::StrCat("element ", i, " is ", v[i]));
    }
  }
  return absl::OkStatus();
}

}  // namespace qtrain
