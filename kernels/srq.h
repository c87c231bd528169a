// Static-range quantization statistics (numerics.md §6): the running `quant_stats` of one
// activation operand and the calibration a step uses.
//
// An SrqStat is plain data owned by whoever holds the model state; SrqObserve mutates it and is
// not thread-safe for one stat.
#pragma once

#include <functional>

#include <cstdint>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/calibration.h"
#include "kernels/entropy_calibration.h"

namespace qtrain {

struct SrqStat {
  int64_t count = 0;
  bool symmetric = true;
  Tensor sum_of_absmax;  // symmetric methods (absmax, rms, fixed)
  Tensor sum_of_min;     // asymmetric methods
  Tensor sum_of_max;
  // entropy (§9): the histogram instead of sums; sum_of_absmax then only gives the (all-ones)
  // per-tensor shape of the statistic.
  std::optional<EntropyHistogram> entropy;
};

// A zero stat of the given statistic shape (Qwix init: count 0, sums 0).
SrqStat MakeSrqStat(const Shape& stat_shape, bool symmetric);

// Averages `dynamic` (the calibration with normal channelwise axes) over `batch_axes` (keepdims);
// when `update`, adds it to the stat (count += 1); returns sum / count (the statistic's shape),
// or `dynamic` itself (its own shape) while count is 0 (updating off and never updated).
// InvalidArgument: a batch axis out of range, or an averaged shape that differs from the stat's
// (e.g. another sequence length under act_batch_axes=(0,): the message suggests (0, 1)).
// FailedPrecondition: symmetry of `dynamic` differs from the stat's.
// `reduce` (may be null) runs on the averaged calibration before it is added (when `update`):
// data-parallel training replaces it there with the mean over every rank's shard.
absl::StatusOr<Calibration> SrqObserve(
    SrqStat& stat, const Calibration& dynamic, absl::Span<const int> batch_axes, bool update,
    const std::function<absl::Status(Calibration&)>& reduce = nullptr);

// The calibration a static-scale (PTQ) model uses: sum / count, or the entropy threshold.
// FailedPrecondition when count is 0.
absl::StatusOr<Calibration> SrqCalibration(const SrqStat& stat, QType qtype);

// An entropy stat (§9) of `bins` over a tensor of rank `rank` (per tensor: shape all ones).
SrqStat MakeEntropySrqStat(int rank, int bins);

// Entropy SRQ (§9 step 4): when `update`, adds x to the histogram (count += 1); returns the
// threshold of the histogram including x, or absmax of x while count is 0. The calibration's
// shape is the stat's (all ones).
Calibration SrqObserveEntropy(SrqStat& stat, const Tensor& x, QType qtype, bool update);

}  // namespace qtrain
