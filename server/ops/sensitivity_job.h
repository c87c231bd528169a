// SensitivityJob: one AnalyzeSensitivity run on a session — the options, the held-out batches
// (reserved from the memory budget while held, capped at kMaxHeldOutBytes) and the analysis
// (engine/sensitivity.h), advanced one evaluation per executor task through
// SessionHandle::SensitivityInput / SensitivityNext. Other calls on the session run between the
// evaluations; one that changes the weights or statistics fails the job (FailedPrecondition),
// since the report would mix two models.
//
// Not thread-safe: touched only on its session's executor (by SessionHandle).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/memory_budget.h"
#include "server/engine/sensitivity.h"
#include "server/engine/trainer.h"
#include "server/ops/results.h"

namespace qtrain::ops {

class SensitivityJob {
 public:
  static constexpr int64_t kMaxHeldOutBytes = int64_t{2} << 30;
  // What one message of the stream brings.
  struct Input {
    std::optional<engine::SensitivityOptions> options;  // Validate'd by the caller
    bool session_rules = false;                         // options without rules: the session's
    std::optional<engine::Batch> batch;
  };
  // `budget` (may be null: unbounded) holds the batches' bytes while they are kept.
  explicit SensitivityJob(engine::MemoryBudget* budget) : budget_(budget) {}

  // True once the report was produced.
  bool reported() const { return reported_; }

 private:
  friend class SessionHandle;
  // Takes one message: InvalidArgument for options after the first message, an accuracy budget
  // for a loss without accuracy, or a batch the model refuses (naming "held-out batch N");
  // ResourceExhausted over kMaxHeldOutBytes or the memory budget. Answers what was received.
  absl::StatusOr<std::string> Add(engine::Trainer& t, const Input& input);
  // The next evaluation, or the report after the last one. InvalidArgument without batches;
  // FailedPrecondition when the session changed since the analysis began.
  absl::StatusOr<SensitivityProgress> Next(engine::Trainer& t);

  engine::MemoryBudget* budget_;
  std::optional<engine::SensitivityOptions> options_;
  bool session_rules_ = true;
  std::vector<engine::Batch> batches_;
  int64_t bytes_ = 0;
  engine::MemoryBudget::Lease lease_;
  std::optional<engine::SensitivityAnalysis> analysis_;
  uint64_t generation_ = 0;  // the trainer's when the analysis began
  bool reported_ = false;
};

}  // namespace qtrain::ops
