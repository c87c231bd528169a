#include "kernels/qtype.h"

#include <array>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace qtrain {
namespace {

constexpr std::array<QType, 11> kAllQTypes = {
    QType::kInt2,  QType::kInt3,         QType::kInt4,      QType::kInt5,
    QType::kInt6,  QType::kInt7,         QType::kInt8,      QType::kInt16,
    QType::kUint8, QType::kFloat8E4M3FN, QType::kFloat8E5M2};

constexpr QTypeInfo IntInfo(const char* name, int bits) {
  const float half = static_cast<float>(1 << (bits - 1));
  return QTypeInfo{name, false, false, half - 0.5f, -half, half - 1.0f};
}

// Rounds |v| to a binary float grid with `mantissa_bits` explicit bits, minimum normal exponent
// `min_exp`, after clipping to `max_value`. Ties to even, subnormals included.
float RoundToFloatGrid(float v, int mantissa_bits, int min_exp, float max_value) {
  if (std::isnan(v)) return v;
  float a = std::fabs(v);
  if (a > max_value) a = max_value;
  if (a == 0.0f) return std::copysign(0.0f, v);
  int exp = 0;
  std::frexp(a, &exp);  // a = m * 2^exp, m in [0.5, 1): the leading bit has weight 2^(exp-1)
  int e = exp - 1;
  if (e < min_exp) e = min_exp;
  const float quantum = std::ldexp(1.0f, e - mantissa_bits);
  const float r = std::nearbyint(a / quantum) * quantum;  // exact: power-of-two scaling
  return std::copysign(r, v);
}

}  // namespace

const QTypeInfo& GetQTypeInfo(QType qtype) {
  static const QTypeInfo kInfos[] = {
      IntInfo("int2", 2),
      IntInfo("int3", 3),
      IntInfo("int4", 4),
      IntInfo("int5", 5),
      IntInfo("int6", 6),
      IntInfo("int7", 7),
      IntInfo("int8", 8),
      QTypeInfo{"int16", false, false, 32768.0f, -32768.0f, 32767.0f},
      QTypeInfo{"uint8", false, true, 255.5f, 0.0f, 255.0f},
      QTypeInfo{"float8_e4m3fn", true, false, 448.0f, -448.0f, 448.0f},
      QTypeInfo{"float8_e5m2", true, false, 57344.0f, -57344.0f, 57344.0f},
  };
  return kInfos[static_cast<int>(qtype)];
}

absl::StatusOr<QType> ParseQType(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (QType q : kAllQTypes) {
    if (lower == GetQTypeInfo(q).name) return q;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown qtype \"", name,
                   "\"; expected one of int2, int3, int4, int5, int6, int7, int8, int16, uint8, "
                   "float8_e4m3fn, float8_e5m2"));
}

bool RunsOnInt8Kernel(QType qtype) {
  const QTypeInfo& info = GetQTypeInfo(qtype);
  return !info.is_float8 && qtype != QType::kInt16;
}

float RoundToFloat8E4M3FN(float v) { return RoundToFloatGrid(v, 3, -6, 448.0f); }
float RoundToFloat8E5M2(float v) { return RoundToFloatGrid(v, 2, -14, 57344.0f); }

float ConvertValue(float v, QType qtype) {
  switch (qtype) {
    case QType::kFloat8E4M3FN:
      return RoundToFloat8E4M3FN(v);
    case QType::kFloat8E5M2:
      return RoundToFloat8E5M2(v);
    default:
      break;
  }
  if (std::isnan(v)) return v;
  const QTypeInfo& info = GetQTypeInfo(qtype);
  // Clamping before rounding equals saturating after it: the bounds are integers.
  const float c = v < info.qmin ? info.qmin : (v > info.qmax ? info.qmax : v);
  return std::nearbyint(c);  // half to even: the default rounding mode
}

}  // namespace qtrain
