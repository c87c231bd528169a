#include "kernels/srq.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

// Mean of t over `axes`, keepdims, summing in float32 in index order.
absl::StatusOr<Tensor> MeanOver(const Tensor& t, absl::Span<const int> axes) {
  ReduceSpec spec;
  spec.axes.assign(axes.begin(), axes.end());
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout l, MakeScaleLayout(t.shape(), spec));
  Tensor sum = Tensor::Zeros(DType::kF32, l.scale_shape);
  float* ps = sum.data<float>();
  const float* pt = t.data<float>();
  int64_t offset = 0;
  for (int64_t i0 = 0; i0 < l.dims[0]; ++i0) {
    for (int64_t i1 = 0; i1 < l.dims[1]; ++i1) {
      for (int64_t i2 = 0; i2 < l.dims[2]; ++i2) {
        for (int64_t i3 = 0; i3 < l.dims[3]; ++i3) {
          ps[l.ScaleIndex(i0, i1, i2, i3)] += pt[offset++];
        }
      }
    }
  }
  const float n = static_cast<float>(l.group_size);
  for (int64_t i = 0; i < sum.numel(); ++i) {
    ps[i] /= n;
  }
  return sum;
}

void AddInto(Tensor& acc, const Tensor& v) {
  float* a = acc.data<float>();
  const float* b = v.data<float>();
  for (int64_t i = 0; i < acc.numel(); ++i) {
    a[i] += b[i];
  }
}

Tensor Divide(const Tensor& sum, int64_t count) {
  Tensor out = sum;
  float* p = out.data<float>();
  const float c = static_cast<float>(count);
  for (int64_t i = 0; i < out.numel(); ++i) {
    p[i] /= c;
  }
  return out;
}

}  // namespace

SrqStat MakeSrqStat(const Shape& stat_shape, bool symmetric) {
  SrqStat s;
  s.symmetric = symmetric;
  if (symmetric) {
    s.sum_of_absmax = Tensor::Zeros(DType::kF32, stat_shape);
  } else {
    s.sum_of_min = Tensor::Zeros(DType::kF32, stat_shape);
    s.sum_of_max = Tensor::Zeros(DType::kF32, stat_shape);
  }
  return s;
}

absl::StatusOr<Calibration> SrqObserve(SrqStat& stat, const Calibration& dynamic,
                                       absl::Span<const int> batch_axes, bool update,
                                       const std::function<absl::Status(Calibration&)>& reduce) {
  if (dynamic.symmetric != stat.symmetric) {
    return absl::FailedPreconditionError(
        "quant_stats were collected with a calibration of the other symmetry; reset them");
  }
  Calibration mean;
  mean.symmetric = dynamic.symmetric;
  const Tensor& first = dynamic.symmetric ? dynamic.absmax : dynamic.lo;
  if (dynamic.symmetric) {
    QTRAIN_ASSIGN_OR_RETURN(mean.absmax, MeanOver(dynamic.absmax, batch_axes));
  } else {
    QTRAIN_ASSIGN_OR_RETURN(mean.lo, MeanOver(dynamic.lo, batch_axes));
    QTRAIN_ASSIGN_OR_RETURN(mean.hi, MeanOver(dynamic.hi, batch_axes));
  }
  const Tensor& stat_sum = stat.symmetric ? stat.sum_of_absmax : stat.sum_of_min;
  const Shape& got = mean.symmetric ? mean.absmax.shape() : mean.lo.shape();
  if (got != stat_sum.shape()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "activation statistic shape ", ShapeString(got), " (from an operand of calibration shape ",
        ShapeString(first.shape()), " averaged over act_batch_axes (",
        absl::StrJoin(batch_axes, ", "), ")) does not match the collected quant_stats shape ",
        ShapeString(stat_sum.shape()),
        "; a rank-3 activation with another sequence length needs act_batch_axes (0, 1)"));
  }
  if (update) {
    if (reduce) QTRAIN_RETURN_IF_ERROR(reduce(mean));
    stat.count += 1;
    if (stat.symmetric) {
      AddInto(stat.sum_of_absmax, mean.absmax);
    } else {
      AddInto(stat.sum_of_min, mean.lo);
      AddInto(stat.sum_of_max, mean.hi);
    }
  }
  if (stat.count == 0) {
    return dynamic;
  }
  return SrqCalibration(stat, QType::kInt8);  // sums: the qtype does not enter
}

absl::StatusOr<Calibration> SrqCalibration(const SrqStat& stat, QType qtype) {
  if (stat.count == 0) {
    return absl::FailedPreconditionError(
        "quant_stats count is 0: run calibration (or training) before using static scales");
  }
  Calibration c;
  c.symmetric = stat.symmetric;
  if (stat.entropy) {
    c.absmax =
        Tensor::FromFloats(stat.sum_of_absmax.shape(), {EntropyThreshold(*stat.entropy, qtype)});
    return c;
  }
  if (stat.symmetric) {
    c.absmax = Divide(stat.sum_of_absmax, stat.count);
  } else {
    c.lo = Divide(stat.sum_of_min, stat.count);
    c.hi = Divide(stat.sum_of_max, stat.count);
  }
  return c;
}

SrqStat MakeEntropySrqStat(int rank, int bins) {
  SrqStat s = MakeSrqStat(Shape(rank, 1), /*symmetric=*/true);
  s.entropy.emplace();
  s.entropy->bins = bins;
  return s;
}

Calibration SrqObserveEntropy(SrqStat& stat, const Tensor& x, QType qtype, bool update) {
  if (update) {
    EntropyAdd(*stat.entropy, x);
    ++stat.count;
  }
  Calibration c;
  if (stat.count == 0) {  // never updated: absmax of this batch
    float m = 0.0f;
    for (float v : x.span<float>()) m = std::max(m, std::fabs(v));
    c.absmax = Tensor::FromFloats(stat.sum_of_absmax.shape(), {m});
    return c;
  }
  c.absmax =
      Tensor::FromFloats(stat.sum_of_absmax.shape(), {EntropyThreshold(*stat.entropy, qtype)});
  return c;
}

}  // namespace qtrain
