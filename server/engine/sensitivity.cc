#include "server/engine/sensitivity.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "kernels/qtype.h"
#include "kernels/status_macros.h"
#include "server/engine/rules.h"

namespace qtrain::engine {
namespace {

constexpr char kFloat[] = "float";

// A regex matching exactly `path` (module paths are names and '/').
std::string ExactPattern(const std::string& path) {
  std::string out;
  for (char c : path) {
    if (std::string_view(".^$|?*+()[]{}\\").find(c) != std::string_view::npos) out += '\\';
    out += c;
  }
  return out;
}

// "dot_general0" -> "dot_general".
std::string OpKind(const std::string& op_id) {
  size_t end = op_id.size();
  while (end > 0 && absl::ascii_isdigit(static_cast<unsigned char>(op_id[end - 1]))) --end;
  return op_id.substr(0, end);
}

// Whether `rule` wants static scales for `module`'s op `op_id` that the session's statistics
// cannot give (no statistic, count 0, or one of the other calibrator family).
bool MissingStatistics(Trainer& t, const Rule& rule, const std::string& module,
                       const std::string& op_id) {
  if (!rule.act_qtype || !rule.act_static_scale) return false;
  const bool entropy = rule.act_method.kind == CalibrationKind::kEntropy;
  std::vector<std::string> names = {op_id + "_lhs"};
  if (OpKind(op_id) == kEinsum) names.push_back(op_id + "_rhs");  // both operands are activations
  for (const std::string& name : names) {
    auto it = t.quant_stats().find({module, name});
    if (it == t.quant_stats().end() || it->second.count == 0 ||
        it->second.entropy.has_value() != entropy) {
      return true;
    }
  }
  return false;
}

bool BudgetSet(const SensitivityOptions& o) {
  return o.max_accuracy_drop > 0 || o.max_loss_increase > 0;
}

}  // namespace

absl::Status SensitivityAnalysis::Validate(const SensitivityOptions& o) {
  QTRAIN_RETURN_IF_ERROR(CompiledRules::Create(o.rules).status());
  if (o.qtypes.size() > kMaxQTypes) {
    return absl::InvalidArgumentError(
        absl::StrCat("qtypes: ", o.qtypes.size(), " candidates; at most ", kMaxQTypes));
  }
  float previous = 0;  // the last candidate's integer range
  for (size_t i = 0; i < o.qtypes.size(); ++i) {
    absl::StatusOr<QType> q = ParseQType(o.qtypes[i]);
    if (!q.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("qtypes[", i, "]: ", q.status().message()));
    }
    const QTypeInfo& info = GetQTypeInfo(*q);
    if (info.is_float8 || info.is_unsigned) {
      return absl::InvalidArgumentError(absl::StrCat(
          "qtypes[", i, "]: \"", o.qtypes[i],
          "\" is not a signed integer qtype (int2 ... int16), which the search ranks"));
    }
    if (info.qmax - info.qmin <= previous) {
      return absl::InvalidArgumentError(
          absl::StrCat("qtypes[", i, "]: \"", o.qtypes[i], "\" is not wider than qtypes[", i - 1,
                       "] \"", o.qtypes[i - 1], "\"; list the candidates most compressed first"));
    }
    previous = info.qmax - info.qmin;
  }
  for (auto [name, value] : {std::pair{"max_accuracy_drop", o.max_accuracy_drop},
                             {"max_loss_increase", o.max_loss_increase}}) {
    if (!std::isfinite(value) || value < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", value, " is not a budget (a finite value >= 0; 0: none)"));
    }
  }
  if (!o.qtypes.empty() && !BudgetSet(o)) {
    return absl::InvalidArgumentError(
        "qtypes are the mixed-precision candidates: set max_accuracy_drop or max_loss_increase");
  }
  return absl::OkStatus();
}

absl::StatusOr<SensitivityAnalysis> SensitivityAnalysis::Create(Trainer& trainer,
                                                                SensitivityOptions options) {
  QTRAIN_RETURN_IF_ERROR(Validate(options));
  if (options.max_accuracy_drop > 0 &&
      trainer.model().spec().loss().kind() != proto::Loss::SOFTMAX_CROSS_ENTROPY) {
    return absl::InvalidArgumentError(
        "max_accuracy_drop: the model's loss (MSE) has no accuracy; use max_loss_increase");
  }
  QTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<const CompiledRules> compiled,
                          CompiledRules::Create(options.rules));
  Model& model = trainer.model();
  std::shared_ptr<const CompiledRules> saved = model.shared_rules();
  QTRAIN_RETURN_IF_ERROR(model.SetRules(compiled));
  const std::vector<std::pair<int, std::string>> ops = model.Ops();
  absl::Status restored = model.SetRules(std::move(saved));
  QTRAIN_CHECK(restored.ok());

  SensitivityAnalysis a;
  std::map<std::pair<std::string, std::string>, int> seen;  // unit -> index
  for (const auto& [rule_index, op] : ops) {
    if (rule_index < 0 || !compiled->rules()[rule_index].weight_qtype) continue;
    const size_t colon = op.rfind(':');
    const std::string module = op.substr(0, colon), op_id = op.substr(colon + 1);
    // An einsum's operands are both activations: without act_qtype it runs in float.
    if (OpKind(op_id) == kEinsum && !compiled->rules()[rule_index].act_qtype) continue;
    const bool missing = MissingStatistics(trainer, compiled->rules()[rule_index], module, op_id);
    auto known = seen.find({module, OpKind(op_id)});
    if (known != seen.end()) {
      a.units_[known->second].uncalibrated |= missing;
      continue;
    }
    UnitSensitivity u;
    u.module_path = module;
    u.op_name = OpKind(op_id);
    u.uncalibrated = missing;
    seen[{module, u.op_name}] = static_cast<int>(a.units_.size());
    u.rule_index = rule_index;
    proto::QuantRule rule = options.rules.rules(rule_index);
    rule.set_module_path(ExactPattern(u.module_path));
    rule.clear_op_names();
    rule.add_op_names(u.op_name);
    u.qtype = options.qtypes.empty() ? rule.weight_qtype() : options.qtypes.front();
    a.units_.push_back(std::move(u));
    a.unit_rules_.push_back(std::move(rule));
  }
  if (a.units_.empty()) {
    return absl::FailedPreconditionError(
        "the rules analysed quantize no op of this model (no rule with a weight_qtype matches)");
  }
  a.level_qtypes_ = options.qtypes.empty() ? std::vector<std::string>{""} : options.qtypes;
  a.options_ = std::move(options);
  a.levels_.assign(a.units_.size(), 0);
  // Every level's rules must compile (an asymmetric calibration with a symmetric-only qtype).
  for (int level = 0; level < a.FloatLevel(); ++level) {
    std::vector<int> all(a.units_.size(), level);
    if (absl::Status s = CompiledRules::Create(a.RulesFor(all)).status(); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("qtypes[", level, "] \"", a.level_qtypes_[level],
                       "\" cannot replace the rules' qtypes: ", s.message()));
    }
  }
  return a;
}

proto::RuleSet SensitivityAnalysis::RulesFor(const std::vector<int>& levels) const {
  proto::RuleSet out;
  for (size_t i = 0; i < units_.size(); ++i) {
    if (levels[i] >= FloatLevel()) continue;  // no rule: float
    proto::QuantRule* r = out.add_rules();
    *r = unit_rules_[i];
    const std::string& q = level_qtypes_[levels[i]];
    if (q.empty()) continue;
    r->set_weight_qtype(q);
    if (!r->act_qtype().empty()) r->set_act_qtype(q);
  }
  return out;
}

int SensitivityAnalysis::planned() const {
  const int n = static_cast<int>(units_.size());
  const int fixed = 2 + n * (options_.one_at_a_time ? 1 : 0) + n * (options_.all_but_one ? 1 : 0);
  const int search_pending = phase_ == Phase::kSearch ? 1 : 0;
  return std::max(done_ + search_pending, fixed);
}

std::optional<Evaluation> SensitivityAnalysis::Next() {
  const int n = static_cast<int>(units_.size());
  std::vector<int> levels(n, 0);
  switch (phase_) {
    case Phase::kFloat:
      return Evaluation{kFloat, proto::RuleSet()};
    case Phase::kQuantized:
      return Evaluation{"quantized", RulesFor(levels)};
    case Phase::kOnly:
      levels.assign(n, FloatLevel());
      levels[unit_] = 0;
      return Evaluation{absl::StrCat("only ", units_[unit_].module_path, " ", units_[unit_].op_name,
                                     " in ", units_[unit_].qtype),
                        RulesFor(levels)};
    case Phase::kAllBut:
      levels[unit_] = FloatLevel();
      return Evaluation{
          absl::StrCat("all but ", units_[unit_].module_path, " ", units_[unit_].op_name),
          RulesFor(levels)};
    case Phase::kSearch: {
      const int l = levels_[raised_];
      return Evaluation{absl::StrCat("mixed precision: ", units_[raised_].module_path, " ",
                                     units_[raised_].op_name, " to ",
                                     l >= FloatLevel() ? kFloat : level_qtypes_[l]),
                        RulesFor(levels_)};
    }
    case Phase::kDone:
      return std::nullopt;
  }
  return std::nullopt;
}

bool SensitivityAnalysis::WithinBudget(const EvalMetrics& m) const {
  if (options_.max_accuracy_drop > 0 &&
      float_.accuracy - m.accuracy > options_.max_accuracy_drop + 1e-12) {
    return false;
  }
  if (options_.max_loss_increase > 0 &&
      m.loss > float_.loss + std::abs(float_.loss) * options_.max_loss_increase + 1e-12) {
    return false;
  }
  return true;
}

double SensitivityAnalysis::Score(int u) const {
  // How much leaving the unit float recovers, or else how much quantizing it alone costs.
  if (units_[u].all_but) return quantized_.loss - units_[u].all_but->loss;
  if (units_[u].only) return units_[u].only->loss - float_.loss;
  return 0;
}

int SensitivityAnalysis::MostSensitiveRaisable() const {
  // In passes: every unit at the lowest level is raised, the most sensitive first, before any is
  // raised twice — precision goes where it helps most, without sending one op straight to float.
  int best = -1;
  for (int u = 0; u < static_cast<int>(units_.size()); ++u) {
    if (levels_[u] >= FloatLevel()) continue;
    if (best < 0 || levels_[u] < levels_[best] ||
        (levels_[u] == levels_[best] && Score(u) > Score(best))) {
      best = u;
    }
  }
  return best;
}

void SensitivityAnalysis::Record(const EvalMetrics& m) {
  const int n = static_cast<int>(units_.size());
  ++done_;
  EvalMetrics current = m;
  switch (phase_) {
    case Phase::kFloat:
      float_ = m;
      phase_ = Phase::kQuantized;
      return;
    case Phase::kQuantized:
      quantized_ = m;
      unit_ = 0;
      phase_ = options_.one_at_a_time ? Phase::kOnly
                                      : (options_.all_but_one ? Phase::kAllBut : Phase::kSearch);
      if (phase_ != Phase::kSearch) return;
      break;
    case Phase::kOnly:
      units_[unit_].only = m;
      if (++unit_ < n) return;
      unit_ = 0;
      phase_ = options_.all_but_one ? Phase::kAllBut : Phase::kSearch;
      if (phase_ != Phase::kSearch) return;
      current = quantized_;
      break;
    case Phase::kAllBut:
      units_[unit_].all_but = m;
      if (++unit_ < n) return;
      phase_ = Phase::kSearch;
      current = quantized_;
      break;
    case Phase::kSearch:
    case Phase::kDone:
      break;
  }
  if (!BudgetSet(options_)) {
    phase_ = Phase::kDone;
    return;
  }
  // The search: raise the most sensitive unit one level until the metrics fit the budget.
  while (true) {
    const int raise = WithinBudget(current) ? -1 : MostSensitiveRaisable();
    if (raise < 0) {
      MixedPrecision mp;
      mp.rules = RulesFor(levels_);
      mp.metrics = current;
      mp.within_budget = WithinBudget(current);
      for (int u = 0; u < n; ++u) {
        const int l = levels_[u];
        mp.choices.push_back({units_[u].module_path, units_[u].op_name,
                              l >= FloatLevel()          ? kFloat
                              : level_qtypes_[l].empty() ? unit_rules_[u].weight_qtype()
                                                         : level_qtypes_[l]});
      }
      mixed_ = std::move(mp);
      phase_ = Phase::kDone;
      return;
    }
    ++levels_[raise];
    raised_ = raise;
    const bool all_float =
        std::all_of(levels_.begin(), levels_.end(), [&](int l) { return l >= FloatLevel(); });
    if (!all_float) {
      phase_ = Phase::kSearch;  // Next evaluates levels_
      return;
    }
    current = float_;  // known: every unit float is the float model
  }
}

SensitivityReport SensitivityAnalysis::Report() const {
  SensitivityReport r;
  r.float_model = float_;
  r.quantized = quantized_;
  std::vector<int> order(units_.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return Score(a) > Score(b); });
  for (int i : order) r.units.push_back(units_[i]);
  r.mixed_precision = mixed_;
  return r;
}

}  // namespace qtrain::engine
