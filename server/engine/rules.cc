#include "server/engine/rules.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {
namespace {

absl::Status RuleError(int index, absl::string_view field, const absl::Status& cause) {
  return absl::InvalidArgumentError(
      absl::StrCat("rules[", index, "].", field, ": ", cause.message()));
}

absl::Status ParseQType(int index, absl::string_view field, const std::string& text,
                        std::optional<QType>& out) {
  if (text.empty()) {
    return absl::OkStatus();
  }
  absl::StatusOr<QType> q = qtrain::ParseQType(text);
  if (!q.ok()) {
    return RuleError(index, field, q.status());
  }
  out = *q;
  return absl::OkStatus();
}

absl::Status ParseMethod(int index, absl::string_view field, const std::string& text,
                         CalibrationMethod& out) {
  if (text.empty()) {
    return absl::OkStatus();  // absmax
  }
  absl::StatusOr<CalibrationMethod> m = ParseCalibrationMethod(text);
  if (!m.ok()) {
    return RuleError(index, field, m.status());
  }
  out = *m;
  return absl::OkStatus();
}

// Axes of an operand (negative counts from the end, as in Qwix): each named once and within the
// largest rank an operand has (8). Whether an axis exists in a given op's operand is known when
// the op first runs, which is also where Qwix (at trace time) reports it.
absl::Status CheckAxes(int index, absl::string_view field, const std::vector<int>& axes) {
  for (size_t i = 0; i < axes.size(); ++i) {
    if (axes[i] < -8 || axes[i] >= 8) {
      return absl::InvalidArgumentError(
          absl::StrCat("rules[", index, "].", field, ": axis ", axes[i], " is outside [-8, 8)"));
    }
    if (std::find(axes.begin(), axes.begin() + i, axes[i]) != axes.begin() + i) {
      return absl::InvalidArgumentError(
          absl::StrCat("rules[", index, "].", field, ": axis ", axes[i], " is repeated"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Rule> ParseRule(int index, const proto::QuantRule& r) {
  Rule rule;
  rule.index = index;
  const std::string pattern = r.module_path().empty() ? ".*" : r.module_path();
  RE2::Options options;
  options.set_log_errors(false);
  rule.module_path = std::make_unique<RE2>(pattern, options);
  if (!rule.module_path->ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("rules[", index, "].module_path \"", pattern,
                     "\" is not a valid RE2 regex: ", rule.module_path->error()));
  }
  for (const std::string& op : r.op_names()) {
    if (op != kDotGeneral && op != kEinsum && op != kConv) {
      return absl::InvalidArgumentError(
          absl::StrCat("rules[", index, "].op_names: unknown op \"", op,
                       "\"; expected dot_general, einsum or conv_general_dilated"));
    }
    rule.op_names.push_back(op);
  }
  QTRAIN_RETURN_IF_ERROR(ParseQType(index, "weight_qtype", r.weight_qtype(), rule.weight_qtype));
  QTRAIN_RETURN_IF_ERROR(ParseQType(index, "act_qtype", r.act_qtype(), rule.act_qtype));
  QTRAIN_RETURN_IF_ERROR(ParseQType(index, "bwd_qtype", r.bwd_qtype(), rule.bwd_qtype));
  QTRAIN_RETURN_IF_ERROR(ParseMethod(index, "weight_calibration_method",
                                     r.weight_calibration_method(), rule.weight_method));
  QTRAIN_RETURN_IF_ERROR(
      ParseMethod(index, "act_calibration_method", r.act_calibration_method(), rule.act_method));
  QTRAIN_RETURN_IF_ERROR(
      ParseMethod(index, "bwd_calibration_method", r.bwd_calibration_method(), rule.bwd_method));
  if (rule.weight_qtype) {
    absl::Status s = ValidateQTypeMethod(*rule.weight_qtype, rule.weight_method);
    if (!s.ok()) {
      return RuleError(index, "weight_calibration_method", s);
    }
  }
  if (rule.act_qtype) {
    absl::Status s = ValidateQTypeMethod(*rule.act_qtype, rule.act_method);
    if (!s.ok()) {
      return RuleError(index, "act_calibration_method", s);
    }
  }
  if (rule.bwd_qtype) {
    absl::Status s = ValidateQTypeMethod(*rule.bwd_qtype, rule.bwd_method);
    if (!s.ok()) {
      return RuleError(index, "bwd_calibration_method", s);
    }
  }
  if (r.tile_case() == proto::QuantRule::kTileSize) {
    if (r.tile_size() <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("rules[", index, "].tile_size ", r.tile_size(), " must be > 0"));
    }
    rule.tile_size = r.tile_size();
  } else if (r.tile_case() == proto::QuantRule::kTileFraction) {
    if (!(r.tile_fraction() > 0.0f && r.tile_fraction() <= 1.0f)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "rules[", index, "].tile_fraction ", r.tile_fraction(), " must be in (0, 1], e.g. 0.25"));
    }
    rule.tile_fraction = r.tile_fraction();
  }
  if (r.tile_weights_only() && r.tile_case() == proto::QuantRule::TILE_NOT_SET) {
    return absl::InvalidArgumentError(
        absl::StrCat("rules[", index, "].tile_weights_only needs tile_size or tile_fraction"));
  }
  rule.tile_weights_only = r.tile_weights_only();
  rule.act_static_scale = r.act_static_scale();
  if (rule.act_static_scale && !rule.act_qtype) {
    return absl::InvalidArgumentError(
        absl::StrCat("rules[", index, "].act_static_scale needs act_qtype to be set"));
  }
  // entropy keeps a histogram in quant_stats (numerics.md §9): static activation scales only.
  for (const auto& [field, method] : {std::pair{"weight_calibration_method", &rule.weight_method},
                                      std::pair{"bwd_calibration_method", &rule.bwd_method}}) {
    if (method->kind == CalibrationKind::kEntropy) {
      return absl::InvalidArgumentError(
          absl::StrCat("rules[", index, "].", field, " = \"", method->ToString(),
                       "\": entropy calibrates activations only (act_calibration_method with "
                       "act_static_scale: true)"));
    }
  }
  if (rule.act_method.kind == CalibrationKind::kEntropy && !rule.act_static_scale) {
    return absl::InvalidArgumentError(
        absl::StrCat("rules[", index, "].act_calibration_method = \"", rule.act_method.ToString(),
                     "\" needs act_static_scale: true (its histogram lives in quant_stats)"));
  }
  if (r.has_act_batch_axes()) {
    rule.act_batch_axes.assign(r.act_batch_axes().axes().begin(), r.act_batch_axes().axes().end());
    QTRAIN_RETURN_IF_ERROR(CheckAxes(index, "act_batch_axes", rule.act_batch_axes));
  }
  if (r.has_channelwise_noise_axes()) {
    rule.channelwise_noise_axes.assign(r.channelwise_noise_axes().axes().begin(),
                                       r.channelwise_noise_axes().axes().end());
    QTRAIN_RETURN_IF_ERROR(CheckAxes(index, "channelwise_noise_axes", rule.channelwise_noise_axes));
  }
  if (r.bwd_weight_grad_tile_size() < 0) {
    return absl::InvalidArgumentError(absl::StrCat("rules[", index, "].bwd_weight_grad_tile_size ",
                                                   r.bwd_weight_grad_tile_size(), " is negative"));
  }
  rule.bwd_weight_grad_tile_size = r.bwd_weight_grad_tile_size();
  rule.disable_channelwise_axes = r.disable_channelwise_axes();
  absl::StatusOr<StochasticRounding> sr = ParseStochasticRounding(r.bwd_stochastic_rounding());
  if (!sr.ok()) {
    return RuleError(index, "bwd_stochastic_rounding", sr.status());
  }
  rule.stochastic_rounding = *sr;
  if (rule.stochastic_rounding != StochasticRounding::kNone && !rule.bwd_qtype) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rules[", index,
        "].bwd_stochastic_rounding needs bwd_qtype: it rounds the quantized gradients of QT"));
  }
  if (rule.stochastic_rounding != StochasticRounding::kNone && rule.bwd_qtype &&
      GetQTypeInfo(*rule.bwd_qtype).is_float8) {
    return absl::InvalidArgumentError(
        absl::StrCat("rules[", index, "].bwd_stochastic_rounding needs an integer bwd_qtype, got ",
                     QTypeName(*rule.bwd_qtype)));
  }
  return rule;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const CompiledRules>> CompiledRules::Create(
    const proto::RuleSet& rules) {
  auto compiled = std::make_shared<CompiledRules>();
  compiled->source_ = rules;
  for (int i = 0; i < rules.rules_size(); ++i) {
    QTRAIN_ASSIGN_OR_RETURN(Rule rule, ParseRule(i, rules.rules(i)));
    compiled->rules_.push_back(std::move(rule));
  }
  return std::shared_ptr<const CompiledRules>(std::move(compiled));
}

const Rule* CompiledRules::Match(absl::string_view module_path, absl::string_view op_name) const {
  for (const Rule& rule : rules_) {
    if (!rule.op_names.empty() &&
        std::find(rule.op_names.begin(), rule.op_names.end(), op_name) == rule.op_names.end()) {
      continue;
    }
    if (RE2::FullMatch(re2::StringPiece(module_path.data(), module_path.size()),
                       *rule.module_path)) {
      return &rule;
    }
  }
  return nullptr;
}

absl::StatusOr<OpPlan> CompiledRules::Plan(absl::string_view module_path, const OpShape& op) const {
  OpPlan plan;
  const Rule* rule = Match(module_path, op.op_name);
  plan.rule = rule;
  if (rule == nullptr || !rule->weight_qtype) {
    return plan;  // weight_qtype none leaves the whole op in float (§1)
  }
  plan.quantize = true;
  const std::string where =
      absl::StrCat("rules[", rule->index, "] at ", module_path, " (", op.op_name, ")");
  int64_t tile = rule->tile_size;
  if (rule->tile_fraction > 0.0f && op.contracting > 0) {
    const double t = static_cast<double>(op.contracting) * rule->tile_fraction;
    tile = static_cast<int64_t>(t + 0.5);
    if (tile <= 0 || std::abs(t - static_cast<double>(tile)) > 1e-6 * t) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": tile_fraction ", rule->tile_fraction,
                                                     " of K=", op.contracting,
                                                     " is not a whole tile length"));
    }
  }
  // Weights only: an op without a weight operand (an einsum) takes no tiles at all.
  if (rule->tile_weights_only && !op.rhs_is_weight) tile = 0;
  if (op.op_name == kConv) {
    if (tile > 0) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": convolutions take no tiles"));
    }
  } else if (tile > 0 && op.contracting % tile != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        where, ": tile ", tile, " does not divide the contracting axis K=", op.contracting));
  }
  if (rule->bwd_weight_grad_tile_size > 0 && op.tokens > 0 &&
      op.tokens % rule->bwd_weight_grad_tile_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": bwd_weight_grad_tile_size ", rule->bwd_weight_grad_tile_size,
                     " does not divide the token axis M=", op.tokens));
  }

  QDotConfig& d = plan.dot;
  d.lhs.qtype = rule->act_qtype;
  d.lhs.method = rule->act_method;
  d.rhs.qtype = op.rhs_is_weight ? rule->weight_qtype : rule->act_qtype;
  d.rhs.method = op.rhs_is_weight ? rule->weight_method : rule->act_method;
  d.tile_size = tile;
  d.untiled_lhs = rule->tile_weights_only;
  d.disable_channelwise = rule->disable_channelwise_axes;
  d.bwd_qtype = rule->bwd_qtype;
  d.bwd_method = rule->bwd_method;
  d.bwd_weight_grad_tile_size = rule->bwd_weight_grad_tile_size;
  d.stochastic_rounding = rule->stochastic_rounding;
  d.noise_varies_rows =
      std::find(rule->channelwise_noise_axes.begin(), rule->channelwise_noise_axes.end(), 0) !=
      rule->channelwise_noise_axes.end();
  d.noise_varies_cols =
      std::find(rule->channelwise_noise_axes.begin(), rule->channelwise_noise_axes.end(), 1) !=
      rule->channelwise_noise_axes.end();
  plan.lhs_static = rule->act_static_scale && rule->act_qtype.has_value();
  plan.rhs_static = plan.lhs_static && !op.rhs_is_weight;

  QConvConfig& cv = plan.conv;
  cv.lhs = d.lhs;
  cv.rhs.qtype = rule->weight_qtype;
  cv.rhs.method = rule->weight_method;
  cv.disable_channelwise = rule->disable_channelwise_axes;
  return plan;
}

}  // namespace qtrain::engine
