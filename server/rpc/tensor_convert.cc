#include "server/rpc/tensor_convert.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/host_convert.h"
#include "kernels/status_macros.h"

namespace qtrain::rpc {
namespace {

constexpr int kMaxRank = 8;

bool ToDType(v1::Tensor::DType wire, DType* out) {
  switch (wire) {
    case v1::Tensor::F32:
      *out = DType::kF32;
      return true;
    case v1::Tensor::I32:
      *out = DType::kS32;
      return true;
    case v1::Tensor::I16:
      *out = DType::kS16;
      return true;
    case v1::Tensor::I8:
      *out = DType::kS8;
      return true;
    case v1::Tensor::U8:
      *out = DType::kU8;
      return true;
    default:
      return false;
  }
}

v1::Tensor::DType ToWireDType(DType d) {
  switch (d) {
    case DType::kF32:
      return v1::Tensor::F32;
    case DType::kS32:
      return v1::Tensor::I32;
    case DType::kS16:
      return v1::Tensor::I16;
    case DType::kS8:
      return v1::Tensor::I8;
    case DType::kU8:
      return v1::Tensor::U8;
  }
  return v1::Tensor::DTYPE_UNSPECIFIED;
}

// F16 / BF16 travel as 2-byte values; the engine has no such dtype, so they arrive as S16
// bits (the same size) and InputsFromWire widens them.
bool IsHalf(v1::Tensor::DType d) { return d == v1::Tensor::F16 || d == v1::Tensor::BF16; }

absl::StatusOr<Tensor> Convert(const v1::Tensor& wire, const std::string& field, int64_t max_bytes,
                               bool inputs) {
  DType dtype;
  if (inputs && IsHalf(wire.dtype())) {
    dtype = DType::kS16;  // the raw 2-byte values; widened by the caller
  } else if (!ToDType(wire.dtype(), &dtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".dtype ", v1::Tensor::DType_Name(wire.dtype()),
                     " is not one of F32, I32, I16, I8, U8",
                     IsHalf(wire.dtype()) ? " (F16 and BF16 are for model inputs)" : ""));
  }
  if (!inputs && (wire.scale_size() > 0 || wire.offset_size() > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": scale and offset are for model inputs only"));
  }
  if (wire.shape_size() > kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ".shape has rank ", wire.shape_size(), "; the limit is ", kMaxRank));
  }
  Shape shape;
  int64_t bytes = static_cast<int64_t>(DTypeSize(dtype));
  for (int64_t d : wire.shape()) {
    if (d < 0) {
      return absl::InvalidArgumentError(absl::StrCat(field, ".shape has a negative dim ", d));
    }
    if (d > 0 && bytes > max_bytes / d) {
      return absl::ResourceExhaustedError(absl::StrCat(
          field, " of shape ", ShapeString(Shape(wire.shape().begin(), wire.shape().end())),
          " exceeds the limit of ", max_bytes, " bytes"));
    }
    bytes *= d;
    shape.push_back(d);
  }
  if (static_cast<int64_t>(wire.data().size()) != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".data has ", wire.data().size(),
                                                   " bytes; ", DTypeName(dtype), " ",
                                                   ShapeString(shape), " needs ", bytes));
  }
  Tensor t = Tensor::Empty(dtype, shape);
  if (bytes > 0) std::memcpy(t.raw(), wire.data().data(), static_cast<size_t>(bytes));
  if (dtype == DType::kF32) {
    absl::Status finite = CheckFiniteHost(t);  // "element 1 is nan"
    if (!finite.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, " ", finite.message(), " (must be finite)"));
    }
  }
  return t;
}

// One of scale / offset: empty (the default), one value, or one per element of the last axis.
absl::Status CheckAffine(const google::protobuf::RepeatedField<float>& v, const char* name,
                         const std::string& field, const Shape& shape) {
  const int64_t last = shape.empty() ? 1 : shape.back();
  if (v.size() > 1 && v.size() != last) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".", name, " has ", v.size(),
                                                   " values; give 1 or one per element of the "
                                                   "last axis (",
                                                   last, ")"));
  }
  for (int i = 0; i < v.size(); ++i) {
    if (!std::isfinite(v[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ".", name, "[", i, "] is ", v[i], " (must be finite)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<Tensor> FromWire(const v1::Tensor& wire, const std::string& field,
                                int64_t max_bytes) {
  return Convert(wire, field, max_bytes, /*inputs=*/false);
}

absl::StatusOr<Tensor> InputsFromWire(const v1::Tensor& wire, const std::string& field,
                                      int64_t max_bytes) {
  QTRAIN_ASSIGN_OR_RETURN(Tensor raw, Convert(wire, field, max_bytes, /*inputs=*/true));
  const bool affine = wire.scale_size() > 0 || wire.offset_size() > 0;
  if (raw.dtype() == DType::kS32) {
    if (affine) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": scale and offset do not apply to I32 token ids"));
    }
    return raw;
  }
  if (raw.dtype() == DType::kF32 && !affine) return raw;
  // The limit holds for what the server keeps: 4 bytes an element.
  if (raw.numel() > max_bytes / 4) {
    return absl::ResourceExhaustedError(
        absl::StrCat(field, " of shape ", ShapeString(raw.shape()), " takes ", raw.numel() * 4,
                     " bytes as F32; the limit is ", max_bytes, " bytes"));
  }
  QTRAIN_RETURN_IF_ERROR(CheckAffine(wire.scale(), "scale", field, raw.shape()));
  QTRAIN_RETURN_IF_ERROR(CheckAffine(wire.offset(), "offset", field, raw.shape()));
  const v1::Tensor::DType d = wire.dtype();
  const S16Meaning s16 = d == v1::Tensor::F16    ? S16Meaning::kF16
                         : d == v1::Tensor::BF16 ? S16Meaning::kBf16
                                                 : S16Meaning::kInt16;
  absl::StatusOr<Tensor> out =
      WidenToF32(raw, s16, absl::MakeConstSpan(wire.scale().data(), wire.scale_size()),
                 absl::MakeConstSpan(wire.offset().data(), wire.offset_size()));
  if (!out.ok()) {
    return absl::Status(out.status().code(), absl::StrCat(field, " ", out.status().message()));
  }
  return out;
}

v1::Tensor ToWire(const Tensor& t) {
  v1::Tensor wire;
  wire.set_dtype(ToWireDType(t.dtype()));
  for (int64_t d : t.shape()) wire.add_shape(d);
  wire.set_data(static_cast<const char*>(t.raw()), t.nbytes());
  return wire;
}

}  // namespace qtrain::rpc
