// What the typed session operations (session_ops.h) answer: plain values copied out of the
// session's state on its executor, so that the caller (rpc) never reads the Trainer itself.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/srq.h"
#include "server/engine/grad_reducer.h"
#include "server/engine/sensitivity.h"
#include "server/engine/trainer.h"
#include "server/store/session_store.h"

namespace qtrain::ops {

// A session's configuration and counters (CreateSession, GetSession, UpdateRules, imports).
struct SessionSummary {
  std::string id;  // the engine's
  int64_t step = 0;
  int64_t parameters = 0;
  int64_t non_trainable = 0;
  int world_size = 1;
  std::string backend;
  engine::proto::ModelSpec model;
  engine::proto::RuleSet rules;
  engine::proto::OptimizerConfig optimizer;
  std::vector<int> unused_rules;
  struct Op {
    std::string module_path;
    std::string op_id;
    int rule_index = -1;
  };
  std::vector<Op> ops;  // every quantizable op with the rule that plans it (-1: none)
};

// One quant_stats entry, copied (engine::QuantStatReport's pointer dies with the next step).
struct QuantStatEntry {
  std::string module_path;
  std::string stat_name;
  SrqStat stat;
  std::optional<QType> qtype;
  absl::StatusOr<QuantParams> params = absl::NotFoundError("not computed");
};

struct QuantStatsSnapshot {
  int64_t step = 0;
  std::vector<QuantStatEntry> entries;  // sorted by (module path, name)
};

struct TrainResult {
  engine::StepResult step;
  std::string mode;  // "float", "qat" or "qt": how the session's rules ran its ops
  double seconds = 0;
  int world_size = 1;
  engine::ReduceTimes reduce;      // data-parallel sessions (world_size > 1)
  int64_t last_durable_step = -1;  // without a data dir: -1
};

struct EvalResult {
  engine::StepResult step;
  double seconds = 0;
  // Cross-entropy over outputs with a position axis: the counts are tokens (perplexity applies).
  bool token_level = false;
};

struct CalibrateResult {
  int64_t examples = 0;
  double seconds = 0;
};

struct SaveResult {
  store::SavedCheckpoint saved;
  double seconds = 0;
};

// A file produced from the session's state (checkpoint download, export).
struct FileResult {
  std::string bytes;
  double seconds = 0;
};

// An uploaded checkpoint loaded into a live session.
struct LoadResult {
  int64_t step = 0;
  double seconds = 0;
};

// One part of a sensitivity job (sensitivity_job.h).
struct SensitivityProgress {
  std::string evaluated;                            // what this part did
  std::optional<engine::EvalMetrics> metrics;       // an evaluation's
  std::optional<engine::SensitivityReport> report;  // the last part's
  double seconds = 0;
  int evaluations = 0;
  int planned = 0;
};

}  // namespace qtrain::ops
