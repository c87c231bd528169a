#include "server/engine/loss.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {

absl::Status ValidateTargets(const proto::Loss& loss, const Shape& output_shape, int64_t batch,
                             const Tensor& targets) {
  Shape want{batch};
  if (loss.kind() == proto::Loss::SOFTMAX_CROSS_ENTROPY) {
    want.insert(want.end(), output_shape.begin(), output_shape.end() - 1);
    if (targets.dtype() != DType::kS32 || targets.shape() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("targets: expected int32 labels of shape ", ShapeString(want), ", got ",
                       DTypeName(targets.dtype()), " ", ShapeString(targets.shape())));
    }
    const int64_t classes = output_shape.back();
    const int32_t* p = targets.data<int32_t>();
    for (int64_t i = 0; i < targets.numel(); ++i) {
      const bool ignored = loss.has_ignore_index() && p[i] == loss.ignore_index();
      if (!ignored && (p[i] < 0 || p[i] >= classes)) {
        return absl::InvalidArgumentError(absl::StrCat("targets: label ", p[i], " at position ", i,
                                                       " is outside [0, ", classes, ")"));
      }
    }
    return absl::OkStatus();
  }
  want.insert(want.end(), output_shape.begin(), output_shape.end());
  if (targets.dtype() != DType::kF32 || targets.shape() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("targets: expected f32 of shape ", ShapeString(want), ", got ",
                     DTypeName(targets.dtype()), " ", ShapeString(targets.shape())));
  }
  const float* p = targets.data<float>();
  for (int64_t i = 0; i < targets.numel(); ++i) {
    if (!std::isfinite(p[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat("targets: element ", i, " is ", p[i], " (targets must be finite)"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<LossResult> ComputeLoss(Backend& backend, const proto::Loss& loss,
                                       const Tensor& output, const Tensor& targets, bool want_grad,
                                       const Tensor* padding) {
  LossResult r;
  if (loss.kind() == proto::Loss::MSE) {
    const float* y = output.data<float>();
    const float* t = targets.data<float>();
    double sum = 0;
    if (want_grad) {
      r.grad = Tensor::Empty(DType::kF32, output.shape());
    }
    for (int64_t i = 0; i < output.numel(); ++i) {
      const double d = static_cast<double>(y[i]) - t[i];
      sum += d * d;
      if (want_grad) {
        r.grad.data<float>()[i] = static_cast<float>(2.0 * d / static_cast<double>(output.numel()));
      }
    }
    r.count = output.dim(0);
    r.loss = sum / static_cast<double>(output.numel());
    return r;
  }
  const int64_t classes = output.shape().back();
  const int64_t rows = output.numel() / classes;
  if (loss.shift_labels() && output.rank() < 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        "loss shift_labels needs (N, T, classes) logits, got ", ShapeString(output.shape())));
  }
  // Positions per sequence when labels are shifted (the label of row i is row i + 1's).
  const int64_t seq = loss.shift_labels() ? output.dim(output.rank() - 2) : 0;
  Tensor logp = Tensor::Empty(DType::kF32, output.shape());
  QTRAIN_RETURN_IF_ERROR(
      backend.SoftmaxFwd(rows, classes, /*log=*/true, output.data<float>(), logp.data<float>()));
  const int32_t* targets_data = targets.data<int32_t>();
  // Row i's label, or -1 when the row is not scored.
  const auto label_of = [&](int64_t i) -> int64_t {
    if (seq > 0) {
      if (i % seq == seq - 1) return -1;
      ++i;
    }
    if (padding != nullptr && padding->numel() == rows && padding->data<uint8_t>()[i]) {
      return -1;  // a token-level label at a padded position
    }
    const int32_t l = targets_data[i];
    return loss.has_ignore_index() && l == loss.ignore_index() ? -1 : l;
  };
  double sum = 0;
  int64_t correct = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t label = label_of(i);
    if (label < 0) {
      continue;
    }
    const float* lp = logp.data<float>() + i * classes;
    sum -= lp[label];
    int64_t arg = 0;
    for (int64_t c = 1; c < classes; ++c) {
      if (lp[c] > lp[arg]) {
        arg = c;
      }
    }
    correct += arg == label;
    ++r.count;
  }
  r.loss = r.count ? sum / static_cast<double>(r.count) : 0.0;
  r.accuracy = r.count ? static_cast<double>(correct) / static_cast<double>(r.count) : 0.0;
  if (want_grad) {
    r.grad = Tensor::Zeros(DType::kF32, output.shape());
    const float inv = r.count ? 1.0f / static_cast<float>(r.count) : 0.0f;
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t label = label_of(i);
      if (label < 0) {
        continue;
      }
      const float* lp = logp.data<float>() + i * classes;
      float* g = r.grad.data<float>() + i * classes;
      for (int64_t c = 0; c < classes; ++c) {
        g[c] = std::exp(lp[c]) * inv;
      }
      g[label] -= inv;
    }
  }
  return r;
}

}  // namespace qtrain::engine
