// Sensitivity analysis and automatic mixed precision (issue: calibration-as-a-service): which
// quantized ops cost the model accuracy, measured over held-out batches, and the cheapest rule
// set that keeps the loss of accuracy within a user's budget.
//
// A unit is what a rule can select on its own: one module path and one op kind (its op_names
// entry; an attention module's two einsums are one unit). The analysis evaluates, in order:
// the float model, the model quantized by the analysed rules, each unit quantized alone
// ("only"), each unit left float with the rest quantized ("all but"), and then — with a budget —
// a greedy search that raises units one precision level at a time (the candidate qtypes, then
// float), in passes over the units from the most sensitive, until the metrics are within the
// budget.
//
// Plain logic: the caller runs each Evaluation (Trainer::EvaluateUnder) and records its metrics,
// so that the work can be split into one executor task per evaluation. Not thread-safe.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qtrain/v1/rules.pb.h"
#include "server/engine/trainer.h"

namespace qtrain::engine {

struct SensitivityOptions {
  proto::RuleSet rules;  // the quantization analysed
  bool one_at_a_time = true;
  bool all_but_one = true;
  // Mixed precision: candidate qtypes, most compressed first (e.g. {"int4", "int8"}); a unit's
  // weight_qtype (and act_qtype, when its rule sets one) is replaced by each in turn, float
  // last. Empty: the analysed rules' own qtypes, then float.
  std::vector<std::string> qtypes;
  // The budget; the search runs when either is set (> 0). Accuracy: absolute drop below the
  // float model's (0.01 = one point); loss: relative rise above the float model's (0.02 = 2%).
  double max_accuracy_drop = 0;
  double max_loss_increase = 0;
};

struct UnitSensitivity {
  std::string module_path;
  std::string op_name;  // "dot_general", "einsum", "conv_general_dilated"
  int rule_index = -1;  // in the analysed rules
  std::string qtype;    // its weight qtype in the analysis
  // Its rule asks for static scales but the session has no statistics for them (none, or
  // another calibrator's): the evaluations then use dynamic scales, as Qwix does. Calibrate
  // under the analysed rules first.
  bool uncalibrated = false;
  std::optional<EvalMetrics> only;     // this unit quantized, the rest float
  std::optional<EvalMetrics> all_but;  // this unit float, the rest quantized
};

struct UnitChoice {
  std::string module_path;
  std::string op_name;
  std::string qtype;  // "float" when left unquantized
};

struct MixedPrecision {
  proto::RuleSet rules;  // one rule per unit, in the model's order
  EvalMetrics metrics;
  bool within_budget = false;
  std::vector<UnitChoice> choices;
};

struct SensitivityReport {
  EvalMetrics float_model;
  EvalMetrics quantized;
  std::vector<UnitSensitivity> units;  // most sensitive first
  std::optional<MixedPrecision> mixed_precision;
};

// One configuration to evaluate.
struct Evaluation {
  std::string label;  // "float", "quantized", "only Dense_0 dot_general", ...
  proto::RuleSet rules;
};

class SensitivityAnalysis {
 public:
  static constexpr size_t kMaxQTypes = 8;
  // Checks the options: InvalidArgument naming the field for rules that do not compile, an
  // unknown qtype, candidates that are not signed integers listed narrowest first (at most
  // kMaxQTypes), or a negative or non-finite budget. Create also refuses an accuracy budget for
  // a loss that has no accuracy (MSE).
  static absl::Status Validate(const SensitivityOptions& options);
  // Plans the analysed rules on `trainer`'s model to find the units (the model's own rules are
  // left as they were). FailedPrecondition when the rules quantize no op.
  static absl::StatusOr<SensitivityAnalysis> Create(Trainer& trainer, SensitivityOptions options);

  // The next configuration to evaluate, or nullopt when the analysis is complete.
  std::optional<Evaluation> Next();
  // The metrics of the evaluation Next returned last.
  void Record(const EvalMetrics& metrics);
  // Evaluations run and known so far (the search adds to the plan as it goes).
  int done() const { return done_; }
  int planned() const;
  SensitivityReport Report() const;

 private:
  SensitivityAnalysis() = default;
  proto::RuleSet RulesFor(const std::vector<int>& levels) const;
  bool WithinBudget(const EvalMetrics& m) const;
  // The unit the search raises next: of those at the lowest level, the most sensitive; -1 when
  // every unit is float.
  int MostSensitiveRaisable() const;
  double Score(int unit) const;
  int FloatLevel() const { return static_cast<int>(level_qtypes_.size()); }

  SensitivityOptions options_;
  std::vector<UnitSensitivity> units_;
  std::vector<proto::QuantRule> unit_rules_;  // each unit's analysed rule
  std::vector<std::string> level_qtypes_;     // per level ("" = the rule's own)
  enum class Phase { kFloat, kQuantized, kOnly, kAllBut, kSearch, kDone };
  Phase phase_ = Phase::kFloat;
  int unit_ = 0;  // within kOnly / kAllBut
  int done_ = 0;
  EvalMetrics float_, quantized_;
  std::vector<int> levels_;  // search: the current level of each unit
  int raised_ = -1;          // the unit the pending search evaluation raised
  std::optional<MixedPrecision> mixed_;
};

}  // namespace qtrain::engine
