// Quantization rules (numerics.md §1): parsing and validation of a proto RuleSet, first-match
// resolution of an op to a rule, and the kernel configuration a matched rule implies.
//
// A RuleSet is compiled once (Create) when a session is created or its rules are replaced; ops
// resolve against it when the model is (re)planned, never per step. Immutable after Create, so
// it may be shared across threads.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/qconv.h"
#include "kernels/qdot.h"
#include "re2/re2.h"
#include "server/engine/config.h"

namespace qtrain::engine {

// The op kinds rules can name in op_names.
inline constexpr absl::string_view kDotGeneral = "dot_general";
inline constexpr absl::string_view kEinsum = "einsum";
inline constexpr absl::string_view kConv = "conv_general_dilated";

// One validated rule.
struct Rule {
  int index = 0;
  std::unique_ptr<RE2> module_path;
  std::vector<std::string> op_names;  // empty: all
  std::optional<QType> weight_qtype;
  std::optional<QType> act_qtype;
  int64_t tile_size = 0;           // tile length, or 0
  float tile_fraction = 0.0f;      // 1/n, or 0
  bool tile_weights_only = false;  // activations keep per-token scales
  CalibrationMethod weight_method;
  CalibrationMethod act_method;
  bool act_static_scale = false;
  std::vector<int> act_batch_axes{0};
  std::optional<QType> bwd_qtype;
  CalibrationMethod bwd_method;
  int64_t bwd_weight_grad_tile_size = 0;
  bool disable_channelwise_axes = false;
  StochasticRounding stochastic_rounding = StochasticRounding::kNone;
  std::vector<int> channelwise_noise_axes{0};
};

// How one quantizable op runs: float (rule == nullptr) or with the matched rule's configs.
struct OpPlan {
  const Rule* rule = nullptr;  // the matched rule (owned by the CompiledRules), or none
  bool quantize = false;       // false: float (no rule, or the rule has no weight_qtype)
  QDotConfig dot;              // dot_general / einsum
  QConvConfig conv;            // conv_general_dilated (padding filled in by the module)
  bool lhs_static = false;     // SRQ on the lhs (activation) operand
  bool rhs_static = false;     // SRQ on the rhs operand (act×act einsums)
  bool quantized() const { return quantize; }
};

// Shape facts an op gives the planner.
struct OpShape {
  absl::string_view op_name;  // kDotGeneral, kEinsum or kConv
  bool rhs_is_weight = true;  // false for act×act einsums
  int64_t contracting = 0;    // K of the dot (the tiled axis); 0 for conv
  int64_t tokens = 0;         // M of the dot (bwd_weight_grad_tile_size axis); 0 if unknown
};

class CompiledRules {
 public:
  // Validates every rule. InvalidArgument naming the rule index, the field and the value: a bad
  // regex, an unknown qtype / calibration method / stochastic rounding, act_static_scale without
  // act_qtype, an asymmetric method on a symmetric-only qtype, a tile <= 0 or a fraction outside
  // (0, 1].
  static absl::StatusOr<std::shared_ptr<const CompiledRules>> Create(const proto::RuleSet& rules);

  // The first rule whose module_path fully matches and whose op_names lists the op, or nullptr.
  const Rule* Match(absl::string_view module_path, absl::string_view op_name) const;

  // Resolves an op: the plan of its matching rule (float when none, or when the rule's
  // weight_qtype is unset). InvalidArgument when the rule's tile does not divide the op's
  // contracting axis or its bwd_weight_grad_tile_size does not divide the token axis.
  absl::StatusOr<OpPlan> Plan(absl::string_view module_path, const OpShape& op) const;

  const std::vector<Rule>& rules() const { return rules_; }
  const proto::RuleSet& source() const { return source_; }

 private:
  std::vector<Rule> rules_;
  proto::RuleSet source_;
};

}  // namespace qtrain::engine
