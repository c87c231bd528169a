#include "server/ops/sensitivity_job.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/loss.h"

namespace qtrain::ops {
namespace {

// Each batch also costs its bookkeeping: many tiny batches must not slip under the cap.
constexpr int64_t kPerBatchOverhead = 4096;

absl::Status Prefixed(const absl::Status& s, const std::string& prefix) {
  return absl::Status(s.code(), absl::StrCat(prefix, ": ", s.message()));
}

}  // namespace

absl::StatusOr<std::string> SensitivityJob::Add(engine::Trainer& t, const Input& input) {
  if (input.options) {
    if (options_ || !batches_.empty()) {
      return absl::InvalidArgumentError("options: only the first message may set them");
    }
    if (input.options->max_accuracy_drop > 0 &&
        t.model().spec().loss().kind() != engine::proto::Loss::SOFTMAX_CROSS_ENTROPY) {
      return absl::InvalidArgumentError(
          "options.max_accuracy_drop: the model's loss (MSE) has no accuracy; use "
          "max_loss_increase");
    }
    options_ = input.options;
    session_rules_ = input.session_rules;
  }
  if (!input.batch) return std::string("options received");
  const engine::Batch& b = *input.batch;
  const std::string which = absl::StrCat("held-out batch ", batches_.size());
  if (absl::Status s = t.ValidateBatch(b); !s.ok()) return Prefixed(s, which);
  const int64_t bytes =
      static_cast<int64_t>(b.inputs.nbytes() + b.targets.nbytes()) + kPerBatchOverhead;
  if (bytes_ + bytes > kMaxHeldOutBytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat(which, ": the held-out batches exceed ", engine::HumanBytes(kMaxHeldOutBytes),
                     "; every evaluation runs over all of them: send a smaller sample"));
  }
  if (batches_.empty()) {
    QTRAIN_ASSIGN_OR_RETURN(lease_, engine::MemoryBudget::Reserve(budget_, 0, "held-out batches"));
  }
  QTRAIN_RETURN_IF_ERROR(lease_.Grow(bytes, absl::StrCat("holding ", which)));
  bytes_ += bytes;
  batches_.push_back(b);
  return absl::StrCat("received ", which, " (", b.inputs.dim(0), " examples)");
}

absl::StatusOr<SensitivityProgress> SensitivityJob::Next(engine::Trainer& t) {
  if (!analysis_) {
    if (batches_.empty()) {
      return absl::InvalidArgumentError(
          "AnalyzeSensitivity received no held-out batches: nothing to evaluate");
    }
    engine::SensitivityOptions options = options_.value_or(engine::SensitivityOptions());
    if (session_rules_) {
      options.rules =
          t.model().rules() != nullptr ? t.model().rules()->source() : engine::proto::RuleSet();
    }
    QTRAIN_ASSIGN_OR_RETURN(engine::SensitivityAnalysis a,
                            engine::SensitivityAnalysis::Create(t, std::move(options)));
    analysis_ = std::move(a);
    generation_ = t.generation();
  }
  // Other calls run between the evaluations: a step that moved the weights or statistics
  // would mix two models in one report.
  if (t.generation() != generation_) {
    return absl::FailedPreconditionError(
        "the session's weights or quant stats changed during the analysis (a Train, Calibrate "
        "or upload ran beside it); run it again when nothing else changes the session");
  }
  engine::SensitivityAnalysis& a = *analysis_;
  SensitivityProgress progress;
  std::optional<engine::Evaluation> next = a.Next();
  if (!next) {
    progress.report = a.Report();
    reported_ = true;
    batches_.clear();
    lease_.Release();
  } else {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<engine::EvalMetrics> m = t.EvaluateUnder(next->rules, batches_);
    if (!m.ok()) return Prefixed(m.status(), next->label);
    progress.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    a.Record(*m);
    progress.evaluated = next->label;
    progress.metrics = *m;
  }
  progress.evaluations = a.done();
  progress.planned = a.planned();
  return progress;
}

}  // namespace qtrain::ops
