#include "kernels/calibration.h"

#include <omp.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/row_ops.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

absl::Status MethodError(absl::string_view text, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("calibration method \"", text, "\": ", why,
                   " (expected absmax[,k], minmax[,k], rms,k, fixed,a[,b], percentile,p, "
                   "mse[,n], entropy[,bins])"));
}

// Reduces every scale group of x: `row(p, n, s)` folds a run of n elements into scale s,
// `elementwise(p, n, s)` folds n elements into scales s..s+n-1. Large tensors are split across
// OpenMP threads so that no two threads write the same scale entry.
template <typename RowFn, typename ElemFn>
void ReduceGroups(const Tensor& x, const ScaleLayout& l, RowFn&& row, ElemFn&& elementwise) {
  const float* px = x.data<float>();
  const int64_t n = l.dims[3];
  const InnerMode mode = GetInnerMode(l);
  if (mode == InnerMode::kPerElement) {
    // Scales run along the last axis: each thread takes one contiguous column range over all
    // rows (long contiguous runs keep the hardware prefetcher streaming).
    const bool parallel = x.numel() >= kParallelMinElements && n >= 64;
    const int64_t chunks = parallel ? std::min<int64_t>(omp_get_max_threads(), n / 32) : 1;
    const int64_t chunk = (n + chunks - 1) / chunks;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t c0 = c * chunk, len = std::min(chunk, n - c0);
      if (len <= 0) {
        continue;
      }
      ForEachRow(
          l, [&](int64_t offset, int64_t base) { elementwise(px + offset + c0, len, base + c0); });
    }
    return;
  }
  auto fold_row = [&](int64_t offset, int64_t base) {
    if (mode == InnerMode::kOneScale) {
      row(px + offset, n, base);
      return;
    }
    for (int64_t t = 0; t < n / l.divisor[3]; ++t) {
      row(px + offset + t * l.divisor[3], l.divisor[3], base + t);
    }
  };
  if (RowsHaveDistinctScales(l)) {
    ParallelForEachRow(l, [&](int64_t, int64_t offset, int64_t base) { fold_row(offset, base); });
  } else {
    ForEachRow(l, fold_row);
  }
}

// The values of every scale group, each group in element order.
std::vector<std::vector<float>> GatherGroups(const Tensor& x, const ScaleLayout& l) {
  std::vector<std::vector<float>> groups(l.num_scales);
  for (std::vector<float>& g : groups) g.reserve(l.group_size);
  ReduceGroups(
      x, l,
      [&](const float* p, int64_t n, int64_t s) { groups[s].insert(groups[s].end(), p, p + n); },
      [&](const float* p, int64_t n, int64_t s) {
        for (int64_t i = 0; i < n; ++i) groups[s + i].push_back(p[i]);
      });
  return groups;
}

// §9 percentile,p of |v| (v is consumed): the "linear" rule in float64, rounded once. Only the
// two order statistics it reads are selected (nth_element), not the whole group sorted.
float PercentileBound(std::vector<float>& v, double p) {
  // Non-finite values (a diverging step) are left out: NaN has no place in an ordering.
  v.erase(std::remove_if(v.begin(), v.end(), [](float e) { return !std::isfinite(e); }), v.end());
  if (v.empty()) return 0.0f;
  for (float& e : v) e = std::fabs(e);
  const double h = (static_cast<double>(v.size() - 1) * p) / 100.0;
  const double floor_h = std::floor(h);
  const size_t i = std::min(static_cast<size_t>(floor_h), v.size() - 1);
  std::nth_element(v.begin(), v.begin() + i, v.end());
  if (h == floor_h || i + 1 >= v.size()) return v[i];
  // v[i + 1] of the sorted order: the smallest of those after the i-th.
  const double lo = v[i];
  const double hi = *std::min_element(v.begin() + i + 1, v.end());
  return static_cast<float>(lo + (h - floor_h) * (hi - lo));
}

// §9 mse,n: the candidate bound A_k = (M·k)/n (float32) whose fake quantization in `qtype` has
// the least squared error over v (float64 terms, summed left to right); ties to the larger k.
// `threads`: candidates are independent, so a lone large group splits them across threads.
float MseBound(const std::vector<float>& v, int n, QType qtype, bool threads) {
  float m = 0.0f;  // over finite values; non-finite ones are left out, as in percentile
  for (float e : v) {
    if (std::isfinite(e)) m = std::max(m, std::fabs(e));
  }
  if (m == 0.0f) return 0.0f;
  const QTypeInfo& info = GetQTypeInfo(qtype);
  const float min_scale = MinScale();
  std::vector<float> bounds(n), scales(n);
  for (int k = 1; k <= n; ++k) {
    bounds[k - 1] = (m * static_cast<float>(k)) / static_cast<float>(n);
    const float s = bounds[k - 1] / info.bound;
    scales[k - 1] = s < min_scale ? 1.0f : s;
  }
  std::vector<double> err(n, 0.0);
  const int64_t size = static_cast<int64_t>(v.size());
  if (!info.is_float8) {
    constexpr int kChunk = 16;
    const int chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(dynamic) if (threads && chunks > 1)
    for (int c = 0; c < chunks; ++c) {
      const int k0 = c * kChunk;
      rowops::MseErrors(v.data(), size, scales.data() + k0, std::min(kChunk, n - k0), info.qmin,
                        info.qmax, err.data() + k0);
    }
  } else {
    for (int k = 0; k < n; ++k) {
      for (float e : v) {
        if (!std::isfinite(e)) continue;
        const float deq = ConvertValue(e / scales[k], qtype) * scales[k];
        const double d = static_cast<double>(e) - static_cast<double>(deq);
        err[k] += d * d;
      }
    }
  }
  float best = m;
  double best_err = INFINITY;
  for (int k = 0; k < n; ++k) {
    if (err[k] <= best_err) {
      best_err = err[k];
      best = bounds[k];
    }
  }
  return best;
}

// A whole-number argument >= `min` of `name`.
absl::StatusOr<int> WholeArgument(absl::string_view text, const std::string& name,
                                  const std::vector<float>& args, int fallback, int min) {
  if (args.size() > 1) {
    return MethodError(text, absl::StrCat(name, " takes at most one argument, got ", args.size()));
  }
  if (args.empty()) return fallback;
  const float v = args[0];
  if (v != std::floor(v) || v < static_cast<float>(min) || v > 1e6f) {
    return MethodError(text, absl::StrCat(name, "'s argument must be a whole number in [", min,
                                          ", 1000000], got ", v));
  }
  return static_cast<int>(v);
}

}  // namespace

bool CalibrationMethod::IsSymmetric() const {
  switch (kind) {
    case CalibrationKind::kAbsMax:
    case CalibrationKind::kRms:
      return true;
    case CalibrationKind::kMinMax:
      return false;
    case CalibrationKind::kFixed:
      return fixed_lo + fixed_hi == 0.0f;
    case CalibrationKind::kPercentile:
    case CalibrationKind::kMse:
    case CalibrationKind::kEntropy:
      return true;
  }
  return true;
}

bool CalibrationMethod::Clips() const {
  switch (kind) {
    case CalibrationKind::kAbsMax:
    case CalibrationKind::kMinMax:
      return k < 1.0f;
    case CalibrationKind::kRms:
    case CalibrationKind::kFixed:
    case CalibrationKind::kMse:
    case CalibrationKind::kEntropy:
      return true;
    case CalibrationKind::kPercentile:
      return percentile < 100.0;
  }
  return false;
}

std::string CalibrationMethod::ToString() const {
  switch (kind) {
    case CalibrationKind::kAbsMax:
      return k == 1.0f ? "absmax" : absl::StrCat("absmax,", k);
    case CalibrationKind::kMinMax:
      return k == 1.0f ? "minmax" : absl::StrCat("minmax,", k);
    case CalibrationKind::kRms:
      return absl::StrCat("rms,", k);
    case CalibrationKind::kFixed:
      return absl::StrCat("fixed,", fixed_lo, ",", fixed_hi);
    case CalibrationKind::kPercentile:
      return absl::StrCat("percentile,", percentile);
    case CalibrationKind::kMse:
      return candidates == 64 ? "mse" : absl::StrCat("mse,", candidates);
    case CalibrationKind::kEntropy:
      return bins == 2048 ? "entropy" : absl::StrCat("entropy,", bins);
  }
  return "";
}

absl::StatusOr<CalibrationMethod> ParseCalibrationMethod(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  std::vector<std::string> parts = absl::StrSplit(lower, ',');
  std::vector<float> args;
  for (size_t i = 1; i < parts.size(); ++i) {
    float v = 0;
    if (!absl::SimpleAtof(parts[i], &v) || !std::isfinite(v)) {
      return MethodError(text, absl::StrCat("argument \"", parts[i], "\" is not a finite number"));
    }
    args.push_back(v);
  }
  const std::string& name = parts[0];
  CalibrationMethod m;
  if (name == "absmax" || name == "minmax" || name == "rms") {
    m.kind = name == "absmax"   ? CalibrationKind::kAbsMax
             : name == "minmax" ? CalibrationKind::kMinMax
                                : CalibrationKind::kRms;
    const size_t min_args = m.kind == CalibrationKind::kRms ? 1 : 0;
    if (args.size() < min_args || args.size() > 1) {
      return MethodError(text, absl::StrCat(name, " takes ", min_args == 1 ? "exactly" : "at most",
                                            " one argument k, got ", args.size()));
    }
    if (!args.empty()) {
      m.k = args[0];
    }
    if (m.k <= 0.0f) {
      return MethodError(text, "k must be > 0");
    }
    return m;
  }
  if (name == "fixed") {
    m.kind = CalibrationKind::kFixed;
    if (args.size() == 1) {
      if (args[0] <= 0.0f) {
        return MethodError(text, "fixed,a needs a > 0");
      }
      m.fixed_lo = -args[0];
      m.fixed_hi = args[0];
    } else if (args.size() == 2) {
      if (args[0] >= args[1]) {
        return MethodError(text, "fixed,a,b needs a < b");
      }
      m.fixed_lo = args[0];
      m.fixed_hi = args[1];
    } else {
      return MethodError(text, absl::StrCat("fixed takes one or two arguments, got ", args.size()));
    }
    return m;
  }
  if (name == "percentile") {
    m.kind = CalibrationKind::kPercentile;
    // p as the string's double: the golden vectors' h = ((n-1)·p)/100 is computed with it.
    if (args.size() != 1 || !absl::SimpleAtod(parts[1], &m.percentile)) {
      return MethodError(
          text, absl::StrCat("percentile takes exactly one argument p, got ", args.size()));
    }
    if (!(m.percentile > 0.0 && m.percentile <= 100.0)) {
      return MethodError(text, absl::StrCat("p = ", parts[1], " must be in (0, 100]"));
    }
    return m;
  }
  if (name == "mse") {
    m.kind = CalibrationKind::kMse;
    QTRAIN_ASSIGN_OR_RETURN(m.candidates, WholeArgument(text, name, args, 64, 1));
    return m;
  }
  if (name == "entropy") {
    m.kind = CalibrationKind::kEntropy;
    QTRAIN_ASSIGN_OR_RETURN(m.bins, WholeArgument(text, name, args, 2048, 2));
    return m;
  }
  return MethodError(text, absl::StrCat("unknown method \"", name, "\""));
}

Calibration Calibrate(const Tensor& x, const ScaleLayout& l, const CalibrationMethod& method,
                      QType qtype) {
  Calibration c;
  c.symmetric = method.IsSymmetric();
  const float k = method.k;
  switch (method.kind) {
    case CalibrationKind::kFixed: {
      const Shape ones(l.scale_shape.size(), 1);
      if (c.symmetric) {
        c.absmax = Tensor::FromFloats(ones, {method.fixed_hi});
      } else {
        c.lo = Tensor::FromFloats(ones, {method.fixed_lo});
        c.hi = Tensor::FromFloats(ones, {method.fixed_hi});
      }
      return c;
    }
    case CalibrationKind::kPercentile:
    case CalibrationKind::kMse: {
      std::vector<std::vector<float>> groups = GatherGroups(x, l);
      c.absmax = Tensor::Empty(DType::kF32, l.scale_shape);
      float* a = c.absmax.data<float>();
      // Threads across groups when there are enough of them, else within mse's candidates.
      const bool parallel = x.numel() >= kParallelMinElements;
      const bool across = parallel && l.num_scales >= omp_get_max_threads();
#pragma omp parallel for schedule(dynamic) if (across)
      for (int64_t s = 0; s < l.num_scales; ++s) {
        a[s] = method.kind == CalibrationKind::kPercentile
                   ? PercentileBound(groups[s], method.percentile)
                   : MseBound(groups[s], method.candidates, qtype, parallel && !across);
      }
      return c;
    }
    case CalibrationKind::kAbsMax:
    case CalibrationKind::kEntropy: {
      c.absmax = Tensor::Zeros(DType::kF32, l.scale_shape);
      float* a = c.absmax.data<float>();
      ReduceGroups(
          x, l,
          [&](const float* p, int64_t n, int64_t s) {
            const float m = rowops::AbsMax(p, n);
            a[s] = m > a[s] ? m : a[s];
          },
          [&](const float* p, int64_t n, int64_t s) { rowops::AbsMaxInto(p, n, a + s); });
      for (int64_t i = 0; i < l.num_scales; ++i) {
        a[i] *= k;
      }
      return c;
    }
    case CalibrationKind::kMinMax: {
      c.lo = Tensor::Zeros(DType::kF32, l.scale_shape);
      c.hi = Tensor::Zeros(DType::kF32, l.scale_shape);
      float* lo = c.lo.data<float>();
      float* hi = c.hi.data<float>();
      ReduceGroups(
          x, l,
          [&](const float* p, int64_t n, int64_t s) {
            float mn, mx;
            rowops::MinMax0(p, n, &mn, &mx);
            lo[s] = mn < lo[s] ? mn : lo[s];
            hi[s] = mx > hi[s] ? mx : hi[s];
          },
          [&](const float* p, int64_t n, int64_t s) { rowops::MinMaxInto(p, n, lo + s, hi + s); });
      for (int64_t i = 0; i < l.num_scales; ++i) {
        lo[i] *= k;
        hi[i] *= k;
      }
      return c;
    }
    case CalibrationKind::kRms: {
      std::vector<double> sums(l.num_scales, 0.0);
      ReduceGroups(
          x, l, [&](const float* p, int64_t n, int64_t s) { sums[s] += rowops::SumSquares(p, n); },
          [&](const float* p, int64_t n, int64_t s) {
            rowops::SumSquaresInto(p, n, sums.data() + s);
          });
      c.absmax = Tensor::Empty(DType::kF32, l.scale_shape);
      float* a = c.absmax.data<float>();
      const float count = static_cast<float>(l.group_size);
      for (int64_t i = 0; i < l.num_scales; ++i) {
        a[i] = k * std::sqrt(static_cast<float>(sums[i]) / count);
      }
      return c;
    }
  }
  return c;
}

float MinScale() {
  static const float kMin = std::sqrt(FLT_MIN);
  return kMin;
}

bool SupportsAsymmetric(QType qtype) {
  return qtype == QType::kInt4 || qtype == QType::kInt8 || qtype == QType::kInt16;
}

absl::Status ValidateQTypeMethod(QType qtype, const CalibrationMethod& method) {
  if (!method.IsSymmetric() && !SupportsAsymmetric(qtype)) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration method \"", method.ToString(), "\" is asymmetric, but qtype ",
                     QTypeName(qtype), " is symmetric only (asymmetric: int4, int8, int16)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<QuantParams> ComputeQuantParams(const Calibration& c, QType qtype) {
  const QTypeInfo& info = GetQTypeInfo(qtype);
  QuantParams p;
  const float min_scale = MinScale();
  if (c.symmetric) {
    p.scale = Tensor::Empty(DType::kF32, c.absmax.shape());
    const float* a = c.absmax.data<float>();
    float* s = p.scale.data<float>();
    for (int64_t i = 0; i < p.scale.numel(); ++i) {
      const float v = a[i] / info.bound;
      s[i] = v < min_scale ? 1.0f : v;
    }
    return p;
  }
  if (!SupportsAsymmetric(qtype)) {
    return absl::InvalidArgumentError(absl::StrCat("asymmetric calibration is not supported for ",
                                                   info.name, " (use int4, int8 or int16)"));
  }
  p.scale = Tensor::Empty(DType::kF32, c.lo.shape());
  p.zero_point = Tensor::Empty(DType::kF32, c.lo.shape());
  const float* lo = c.lo.data<float>();
  const float* hi = c.hi.data<float>();
  float* s = p.scale.data<float>();
  float* zp = p.zero_point.data<float>();
  for (int64_t i = 0; i < p.scale.numel(); ++i) {
    float v = (hi[i] - lo[i]) / (info.qmax - info.qmin);
    if (v < min_scale) {
      v = 1.0f;
    }
    s[i] = v;
    zp[i] = ConvertValue(info.qmin - lo[i] / v, qtype);
  }
  return p;
}

}  // namespace qtrain
