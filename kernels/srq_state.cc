#include "kernels/srq_state.h"

#include <cmath>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/host_convert.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

// The entropy histogram of a quant stat from a checkpoint (ExportSrqStat's layout): R, and the
// counts as f32 `entropy_hist` + `entropy_hist_low`. InvalidArgument naming the stat when the
// tensors are malformed: counts must be whole, non-negative and finite, R finite and >= 0, and
// an empty range must come with an empty histogram.
absl::StatusOr<EntropyHistogram> ImportEntropy(const std::map<std::string, Tensor>& state,
                                               const std::string& base, const Tensor& hist) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(absl::StrCat("state: \"", base, "\" entropy: ", why));
  };
  auto range = state.find(base + "/entropy_range");
  auto low = state.find(base + "/entropy_hist_low");
  if (range == state.end() || low == state.end()) {
    return bad("needs entropy_range, entropy_hist and entropy_hist_low");
  }
  if (hist.dtype() != DType::kF32 || hist.rank() != 1 || hist.numel() < 2 ||
      hist.numel() > 1000000 || low->second.dtype() != DType::kF32 ||
      low->second.shape() != hist.shape() || range->second.dtype() != DType::kF32 ||
      range->second.numel() != 1) {
    return bad(
        "entropy_hist / entropy_hist_low must be f32 of 2 to 1000000 bins, entropy_range "
        "one f32");
  }
  EntropyHistogram h;
  h.bins = static_cast<int>(hist.numel());
  h.range = range->second.data<float>()[0];
  if (!std::isfinite(h.range) || h.range < 0.0f) return bad("entropy_range must be finite, >= 0");
  bool any = false;
  std::vector<double> counts(h.bins);
  for (int b = 0; b < h.bins; ++b) {
    const double c = static_cast<double>(hist.data<float>()[b]) + low->second.data<float>()[b];
    if (!std::isfinite(c) || c < 0.0 || c != std::floor(c)) {
      return bad(absl::StrCat("bin ", b, " holds ", c, ", not a whole count"));
    }
    counts[b] = c;
    any = any || c > 0.0;
  }
  if (h.range > 0.0f) h.hist = std::move(counts);
  if (h.range == 0.0f && any) return bad("counts without a range");
  return h;
}

}  // namespace

void ExportSrqStat(const SrqStat& stat, const std::string& prefix,
                   std::map<std::string, Tensor>* out_map) {
  std::map<std::string, Tensor>& out = *out_map;
  Tensor count = Tensor::Empty(DType::kS32, {1});
  count.data<int32_t>()[0] = static_cast<int32_t>(stat.count);
  out[prefix + "count"] = std::move(count);
  if (stat.entropy) {
    // numerics.md §9: R and the histogram. Counts are whole float64 numbers; f32 `hist` plus
    // the f32 remainder `hist_low` keep them exact up to 2^48.
    out[prefix + "entropy_range"] = Tensor::FromFloats({1}, {stat.entropy->range});
    const std::vector<double>& h = stat.entropy->hist;
    const int64_t bins = stat.entropy->bins;
    Tensor hi = Tensor::Zeros(DType::kF32, {bins});
    Tensor lo = Tensor::Zeros(DType::kF32, {bins});
    for (size_t b = 0; b < h.size() && static_cast<int64_t>(b) < bins; ++b) {
      hi.data<float>()[b] = static_cast<float>(h[b]);
      lo.data<float>()[b] = static_cast<float>(h[b] - static_cast<double>(hi.data<float>()[b]));
    }
    out[prefix + "entropy_hist"] = std::move(hi);
    out[prefix + "entropy_hist_low"] = std::move(lo);
    out[prefix + "sum_of_absmax"] = stat.sum_of_absmax;  // zeros: the per-tensor shape
  } else if (stat.symmetric) {
    out[prefix + "sum_of_absmax"] = stat.sum_of_absmax;
  } else {
    out[prefix + "sum_of_min"] = stat.sum_of_min;
    out[prefix + "sum_of_max"] = stat.sum_of_max;
  }
}

absl::StatusOr<SrqStat> ImportSrqStat(const std::map<std::string, Tensor>& state,
                                      const std::string& base, const Tensor& count) {
  if (count.dtype() != DType::kS32 || count.numel() != 1 || count.data<int32_t>()[0] < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("state: \"", base, "/count\" must be one non-negative int32 count"));
  }
  SrqStat stat;
  stat.count = count.data<int32_t>()[0];
  auto sum = state.find(base + "/sum_of_absmax");
  if (sum != state.end()) {
    stat.symmetric = true;
    stat.sum_of_absmax = sum->second;
  } else {
    auto lo = state.find(base + "/sum_of_min"), hi = state.find(base + "/sum_of_max");
    if (lo == state.end() || hi == state.end() || lo->second.shape() != hi->second.shape()) {
      return absl::InvalidArgumentError(
          absl::StrCat("state: \"", base, "\" needs sum_of_absmax or sum_of_min/sum_of_max"));
    }
    stat.symmetric = false;
    stat.sum_of_min = lo->second;
    stat.sum_of_max = hi->second;
  }
  if (auto hist = state.find(base + "/entropy_hist"); hist != state.end()) {
    QTRAIN_ASSIGN_OR_RETURN(stat.entropy, ImportEntropy(state, base, hist->second));
  }
  for (const Tensor* sum : {&stat.sum_of_absmax, &stat.sum_of_min, &stat.sum_of_max}) {
    if (sum->empty()) {
      continue;
    }
    if (sum->dtype() != DType::kF32 || sum->rank() < 1 || sum->rank() > 4 ||
        !CheckFiniteHost(*sum).ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "state: the sums of \"", base, "\" must be finite f32 tensors of rank 1 to 4"));
    }
  }
  return stat;
}

}  // namespace qtrain
