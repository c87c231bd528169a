#include "kernels/scale_layout.h"

#include "absl/strings/str_cat.h"

namespace qtrain {

absl::StatusOr<ScaleLayout> MakeScaleLayout(const Shape& shape, const ReduceSpec& spec) {
  const int rank = static_cast<int>(shape.size());
  if (rank < 1 || rank > ScaleLayout::kMaxRank) {
    return absl::InvalidArgumentError(
        absl::StrCat("tensor rank ", rank, " (shape ", ShapeString(shape),
                     ") is not supported; expected rank 1 to ", ScaleLayout::kMaxRank));
  }
  for (int64_t d : shape) {
    if (d <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("shape ", ShapeString(shape), " has a dimension <= 0"));
    }
  }
  std::array<bool, ScaleLayout::kMaxRank> reduced{};
  for (int a : spec.axes) {
    const int axis = a < 0 ? a + rank : a;
    if (axis < 0 || axis >= rank) {
      return absl::InvalidArgumentError(absl::StrCat("reduce axis ", a,
                                                     " is out of range for rank ", rank, " (shape ",
                                                     ShapeString(shape), ")"));
    }
    if (reduced[axis]) {
      return absl::InvalidArgumentError(absl::StrCat("reduce axis ", a, " is repeated"));
    }
    reduced[axis] = true;
  }
  int tile_axis = -1;
  if (spec.tile_axis != -1 || spec.tile_size != 0) {
    tile_axis = spec.tile_axis < 0 ? spec.tile_axis + rank : spec.tile_axis;
    if (tile_axis < 0 || tile_axis >= rank) {
      return absl::InvalidArgumentError(
          absl::StrCat("tile axis ", spec.tile_axis, " is out of range for rank ", rank));
    }
    if (!reduced[tile_axis] && !spec.per_tensor) {
      return absl::InvalidArgumentError(
          absl::StrCat("tile axis ", spec.tile_axis, " is not a reduced axis"));
    }
    if (spec.tile_size <= 0 || shape[tile_axis] % spec.tile_size != 0) {
      return absl::InvalidArgumentError(absl::StrCat("tile_size ", spec.tile_size,
                                                     " does not divide axis ", tile_axis,
                                                     " of length ", shape[tile_axis]));
    }
  }

  ScaleLayout layout;
  const int pad = ScaleLayout::kMaxRank - rank;
  layout.scale_shape.assign(rank, 1);
  for (int a = 0; a < rank; ++a) {
    layout.dims[pad + a] = shape[a];
    if (a == tile_axis) {
      layout.scale_shape[a] = shape[a] / spec.tile_size;
      layout.divisor[pad + a] = spec.tile_size;
    } else if (!reduced[a] && !spec.per_tensor) {
      layout.scale_shape[a] = shape[a];
    }
  }
  int64_t stride = 1;
  for (int a = rank - 1; a >= 0; --a) {
    layout.scale_stride[pad + a] = layout.scale_shape[a] == 1 ? 0 : stride;
    stride *= layout.scale_shape[a];
  }
  layout.num_scales = stride;
  layout.group_size = NumElements(shape) / layout.num_scales;
  return layout;
}

}  // namespace qtrain

namespace qtrain {

InnerMode GetInnerMode(const ScaleLayout& layout) {
  if (layout.divisor[3] > 1) {
    return InnerMode::kTiled;
  }
  if (layout.scale_stride[3] == 0) {
    return InnerMode::kOneScale;
  }
  return InnerMode::kPerElement;
}

void ParallelForEachRow(const ScaleLayout& l,
                        absl::FunctionRef<void(int64_t row, int64_t offset, int64_t base)> fn) {
  const int64_t rows = l.dims[0] * l.dims[1] * l.dims[2];
  const bool parallel = rows > 1 && rows * l.dims[3] >= kParallelMinElements;
#pragma omp parallel for schedule(static) if (parallel)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t i2 = r % l.dims[2];
    const int64_t i1 = (r / l.dims[2]) % l.dims[1];
    const int64_t i0 = r / (l.dims[2] * l.dims[1]);
    fn(r, r * l.dims[3], l.ScaleIndex(i0, i1, i2, 0));
  }
}

bool RowsHaveDistinctScales(const ScaleLayout& l) {
  for (int a = 0; a < 3; ++a) {
    if (l.dims[a] != 1 && l.scale_stride[a] == 0) {
      return false;
    }
  }
  return true;
}

Tensor BroadcastScale(const Tensor& t, const Shape& shape) {
  if (t.shape() == shape) {
    return t;
  }
  ReduceSpec spec;
  for (int a = 0; a < t.rank(); ++a) {
    if (t.dim(a) == 1 && shape[a] != 1) {
      spec.axes.push_back(a);
    }
  }
  // Reuse the scale layout machinery: `t` is a "scale tensor" of `shape`.
  const ScaleLayout l = *MakeScaleLayout(shape, spec);
  Tensor out = Tensor::Empty(DType::kF32, shape);
  const float* src = t.data<float>();
  float* dst = out.data<float>();
  int64_t offset = 0;
  for (int64_t i0 = 0; i0 < l.dims[0]; ++i0) {
    for (int64_t i1 = 0; i1 < l.dims[1]; ++i1) {
      for (int64_t i2 = 0; i2 < l.dims[2]; ++i2) {
        for (int64_t i3 = 0; i3 < l.dims[3]; ++i3) {
          dst[offset++] = src[l.ScaleIndex(i0, i1, i2, i3)];
        }
      }
    }
  }
  return out;
}

}  // namespace qtrain
