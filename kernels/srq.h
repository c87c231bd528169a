// Static-range quantization statistics (numerics.md §6): the running `quant_stats` of one
// activation operand and the calibration a step uses.
//
// An SrqStat is plain data owned by whoever holds the model state; SrqObserve mutates it and is
// not thread-safe for one stat.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/calibration.h"

namespace qtrain {

struct SrqStat {
  int64_t count = 0;
  bool symmetric = true;
  Tensor sum_of_absmax;  // symmetric methods (absmax, rms, fixed)
  Tensor sum_of_min;     // asymmetric methods
  Tensor sum_of_max;
};

// A zero stat of the given statistic shape (Qwix init: count 0, sums 0).
SrqStat MakeSrqStat(const Shape& stat_shape, bool symmetric);

// Averages `dynamic` (the calibration with normal channelwise axes) over `batch_axes` (keepdims);
// when `update`, adds it to the stat (count += 1); returns sum / count (the statistic's shape),
// or `dynamic` itself (its own shape) while count is 0 (updating off and never updated).
// InvalidArgument: a batch axis out of range, or an averaged shape that differs from the stat's
// (e.g. another sequence length under act_batch_axes=(0,): the message suggests (0, 1)).
// FailedPrecondition: symmetry of `dynamic` differs from the stat's.
absl::StatusOr<Calibration> SrqObserve(SrqStat& stat, const Calibration& dynamic,
                                       absl::Span<const int> batch_axes, bool update);

// The calibration a static-scale (PTQ) model uses: sum / count.
// FailedPrecondition when count is 0.
absl::StatusOr<Calibration> SrqCalibration(const SrqStat& stat);

}  // namespace qtrain
