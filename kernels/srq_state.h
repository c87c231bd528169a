// SrqStat ↔ named tensors: how a quant statistic is kept in checkpoints (and read back from
// untrusted ones). Host tensors; the checkpoint code owns the names' prefix.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/srq.h"
#include "kernels/tensor.h"

namespace qtrain {

// Adds `stat`'s tensors under `prefix` ("quant_stats/<module>/<stat>/"): count (s32 [1]), the
// sums, and for entropy R ("entropy_range") and the histogram as f32 "entropy_hist" plus the f32
// remainder "entropy_hist_low" (whole float64 counts stay exact up to 2^48).
void ExportSrqStat(const SrqStat& stat, const std::string& prefix,
                   std::map<std::string, Tensor>* out);

// The stat whose tensors sit under `base` ("quant_stats/<module>/<stat>"), from `count` (the
// tensor at base + "/count"). InvalidArgument naming the stat when a tensor is missing or
// malformed: the count one non-negative int32, sums finite f32 of rank 1 to 4, an entropy
// histogram of 2 to 1000000 whole non-negative counts with a finite R >= 0 (an empty range with
// an empty histogram).
absl::StatusOr<SrqStat> ImportSrqStat(const std::map<std::string, Tensor>& state,
                                      const std::string& base, const Tensor& count);

}  // namespace qtrain
