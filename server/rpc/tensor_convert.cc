#include "server/rpc/tensor_convert.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"

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

}  // namespace

absl::StatusOr<Tensor> FromWire(const v1::Tensor& wire, const std::string& field,
                                int64_t max_bytes) {
  DType dtype;
  if (!ToDType(wire.dtype(), &dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(field, ".dtype ",
                                                   v1::Tensor::DType_Name(wire.dtype()),
                                                   " is not one of F32, I32, I16, I8, U8"));
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
    const float* p = t.data<float>();
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (!std::isfinite(p[i])) {
        return absl::InvalidArgumentError(
            absl::StrCat(field, " element ", i, " is ", p[i], " (must be finite)"));
      }
    }
  }
  return t;
}

v1::Tensor ToWire(const Tensor& t) {
  v1::Tensor wire;
  wire.set_dtype(ToWireDType(t.dtype()));
  for (int64_t d : t.shape()) wire.add_shape(d);
  wire.set_data(static_cast<const char*>(t.raw()), t.nbytes());
  return wire;
}

}  // namespace qtrain::rpc
