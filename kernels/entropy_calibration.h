// Entropy calibration (numerics.md §9): TensorRT's KL-divergence threshold search, made exact.
// The state is a histogram of |x| over [0, R) whose range grows by exact doublings; the threshold
// is the clipping bound whose quantized distribution diverges least from the histogram.
//
// Plain data and pure functions; not thread-safe for one histogram.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/qtype.h"
#include "kernels/tensor.h"

namespace qtrain {

struct EntropyHistogram {
  int bins = 2048;
  float range = 0.0f;        // R: 0 until a batch with max|x| > 0
  std::vector<double> hist;  // `bins` counts once range > 0, else empty
};

// Adds every |x| of an f32 batch (§9 step 2): the range first grows to cover max|x| by doubling
// (merging 2^j old bins into each new one), then each value lands in bin
// min(bins-1, floor(|x|·bins/R)). A batch of zeros before any non-zero batch adds nothing;
// NaN and infinite values are skipped.
void EntropyAdd(EntropyHistogram& h, const Tensor& x);

// The threshold A of §9 step 3 for quantizing to `qtype`: the i in [L, bins] (L = qmax + 1, 128
// for fp8) minimising KL(P || Q) over a copy of the histogram whose bin 0 holds bin 1's count, ties
// to the smaller i, as float32(i·R / bins); R when no i is a candidate (or the histogram is empty:
// 0).
float EntropyThreshold(const EntropyHistogram& h, QType qtype);

}  // namespace qtrain
