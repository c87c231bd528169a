// Quantized types of the numerics contract (numerics.md §2): their symmetric bound B, integer
// range, and `convert` (saturating round-half-even for integers, fp8 grid rounding for floats).
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qtrain {

enum class QType : uint8_t {
  kInt2,
  kInt3,
  kInt4,
  kInt5,
  kInt6,
  kInt7,
  kInt8,
  kInt16,
  kUint8,
  kFloat8E4M3FN,
  kFloat8E5M2,
};

struct QTypeInfo {
  const char* name;
  bool is_float8;
  bool is_unsigned;
  float bound;  // B: +absmax maps here (int8: 127.5)
  float qmin;   // integer range, or ±max finite value for fp8
  float qmax;
};

// Properties of `qtype`.
const QTypeInfo& GetQTypeInfo(QType qtype);
inline const char* QTypeName(QType qtype) { return GetQTypeInfo(qtype).name; }

// Parses "int8", "int4", ..., "uint8", "float8_e4m3fn", "float8_e5m2" (case-insensitive).
// InvalidArgument naming the value and the accepted names otherwise.
absl::StatusOr<QType> ParseQType(absl::string_view name);

// True when values fit an 8-bit integer register (int2..int8, uint8): the int8 kernels run them.
bool RunsOnInt8Kernel(QType qtype);

// convert(v) of numerics.md §2: the quantized value, as a float (an integer for integer qtypes,
// a value on the fp8 grid for fp8). ±inf saturate; NaN stays NaN.
float ConvertValue(float v, QType qtype);

// Rounds to the nearest float8 value (ties to even, subnormals included) after clipping to ±max.
float RoundToFloat8E4M3FN(float v);
float RoundToFloat8E5M2(float v);

}  // namespace qtrain
