// ScaleLayout: how a tensor of rank 1–4 maps onto its scale tensor (numerics.md §4).
//
// Reduced axes share one scale; kept (channelwise) axes get one scale per index; an optional tile
// splits one reduced axis into length-`tile_size` groups, each with its own scale. The scale
// tensor keeps the input's rank (reduced axes have size 1, the tiled axis size dim/tile).
#pragma once

#include <array>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/tensor.h"

namespace qtrain {

struct ReduceSpec {
  std::vector<int> axes;    // reduced axes; negative values count from the end
  int tile_axis = -1;       // axis split into tiles (must also be reduced), -1 for none
  int64_t tile_size = 0;    // tile length along tile_axis
  bool per_tensor = false;  // one scale for everything (fixed calibration)
};

struct ScaleLayout {
  static constexpr int kMaxRank = 4;
  // Input dims, left-padded with 1s to 4-D.
  std::array<int64_t, kMaxRank> dims{1, 1, 1, 1};
  // Stride into the scale tensor of each (padded) axis; 0 for reduced axes.
  std::array<int64_t, kMaxRank> scale_stride{0, 0, 0, 0};
  // Index divisor per axis: tile_size on the tiled axis, else 1.
  std::array<int64_t, kMaxRank> divisor{1, 1, 1, 1};
  Shape scale_shape;  // same rank as the input
  int64_t num_scales = 1;
  int64_t group_size = 1;  // input elements per scale

  // Index into the scale tensor of the element at padded 4-D index (i0, i1, i2, i3).
  int64_t ScaleIndex(int64_t i0, int64_t i1, int64_t i2, int64_t i3) const {
    return (i0 / divisor[0]) * scale_stride[0] + (i1 / divisor[1]) * scale_stride[1] +
           (i2 / divisor[2]) * scale_stride[2] + (i3 / divisor[3]) * scale_stride[3];
  }
};

// Builds the layout of `shape` under `spec`.
// InvalidArgument: rank outside 1..4, an axis out of range or repeated, a tile axis that is not
// reduced, a tile size <= 0 or one that does not divide the axis (the message names both).
absl::StatusOr<ScaleLayout> MakeScaleLayout(const Shape& shape, const ReduceSpec& spec);

}  // namespace qtrain

namespace qtrain {

// How the innermost (last) axis maps to scales, which decides the row loop to use.
enum class InnerMode {
  kOneScale,   // the whole row shares one scale
  kTiled,      // consecutive chunks of divisor[3] elements share a scale
  kPerElement  // scale index advances with the element (channelwise last axis)
};
InnerMode GetInnerMode(const ScaleLayout& layout);

// Calls fn(row_offset, scale_base) for every row along the last axis, in memory order.
template <typename Fn>
void ForEachRow(const ScaleLayout& l, Fn&& fn) {
  int64_t offset = 0;
  for (int64_t i0 = 0; i0 < l.dims[0]; ++i0) {
    for (int64_t i1 = 0; i1 < l.dims[1]; ++i1) {
      for (int64_t i2 = 0; i2 < l.dims[2]; ++i2) {
        fn(offset, l.ScaleIndex(i0, i1, i2, 0));
        offset += l.dims[3];
      }
    }
  }
}

// True when no two rows share a scale entry, so rows can be reduced in parallel.
bool RowsHaveDistinctScales(const ScaleLayout& l);

// Work below this many elements stays on the calling thread.
inline constexpr int64_t kParallelMinElements = 1 << 16;

// Calls fn(row, row_offset, scale_base) for every row along the last axis, split across the
// OpenMP threads when the tensor is large. fn must only write state owned by its row.
void ParallelForEachRow(const ScaleLayout& l,
                        absl::FunctionRef<void(int64_t row, int64_t offset, int64_t base)> fn);

// `t` (a scale tensor: `shape`'s rank, size-1 axes where reduced) repeated along its size-1
// axes to `shape` (f32, host memory); `t` itself when the shapes are equal.
Tensor BroadcastScale(const Tensor& t, const Shape& shape);

}  // namespace qtrain
