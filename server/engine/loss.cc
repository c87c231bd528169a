#include "server/engine/loss.h"

#include <climits>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {

namespace {

// An ignore index no int32 label can equal ignores nothing.
bool IgnoresLabels(const proto::Loss& loss) {
  return loss.has_ignore_index() && loss.ignore_index() >= INT32_MIN &&
         loss.ignore_index() <= INT32_MAX;
}

}  // namespace

absl::Status ValidateTargets(Backend& backend, const proto::Loss& loss, const Shape& output_shape,
                             int64_t batch, const Tensor& targets) {
  Shape want{batch};
  if (loss.kind() == proto::Loss::SOFTMAX_CROSS_ENTROPY) {
    want.insert(want.end(), output_shape.begin(), output_shape.end() - 1);
    if (targets.dtype() != DType::kS32 || targets.shape() != want) {
      return absl::InvalidArgumentError(
          absl::StrCat("targets: expected int32 labels of shape ", ShapeString(want), ", got ",
                       DTypeName(targets.dtype()), " ", ShapeString(targets.shape())));
    }
    absl::Status s = backend.CheckLabels(targets, output_shape.back(), IgnoresLabels(loss),
                                         static_cast<int32_t>(loss.ignore_index()));
    if (!s.ok()) return absl::Status(s.code(), absl::StrCat("targets: ", s.message()));
    return absl::OkStatus();
  }
  want.insert(want.end(), output_shape.begin(), output_shape.end());
  if (targets.dtype() != DType::kF32 || targets.shape() != want) {
    return absl::InvalidArgumentError(
        absl::StrCat("targets: expected f32 of shape ", ShapeString(want), ", got ",
                     DTypeName(targets.dtype()), " ", ShapeString(targets.shape())));
  }
  absl::Status s = backend.CheckFinite(targets);  // "element 3 is nan"
  if (!s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("targets: ", s.message(), " (targets must be finite)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<LossResult> ComputeLoss(Backend& backend, const proto::Loss& loss,
                                       const Tensor& output, const Tensor& targets, bool want_grad,
                                       const Tensor* padding) {
  LossResult r;
  Tensor* grad = want_grad ? &r.grad : nullptr;
  if (loss.kind() == proto::Loss::MSE) {
    QTRAIN_ASSIGN_OR_RETURN(const double sum, backend.SquaredError(output, targets, grad));
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
  CrossEntropyDesc d;
  d.rows = rows;
  d.classes = classes;
  // Positions per sequence when labels are shifted (the label of row i is row i + 1's).
  d.shift_seq = loss.shift_labels() ? output.dim(output.rank() - 2) : 0;
  d.has_ignore = IgnoresLabels(loss);
  d.ignore_index = static_cast<int32_t>(loss.ignore_index());
  // Token-level padding flags only (one per logit row).
  const Tensor* pad = padding != nullptr && padding->numel() == rows ? padding : nullptr;
  QTRAIN_ASSIGN_OR_RETURN(const CrossEntropyResult ce,
                          backend.SoftmaxCrossEntropy(d, output, targets, pad, grad));
  r.count = ce.count;
  r.loss = ce.count ? ce.loss_sum / static_cast<double>(ce.count) : 0.0;
  r.accuracy = ce.count ? static_cast<double>(ce.correct) / static_cast<double>(ce.count) : 0.0;
  return r;
}

}  // namespace qtrain::engine
