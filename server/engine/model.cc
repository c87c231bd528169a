#include "server/engine/model.h"

#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {

int64_t Model::num_parameters() const {
  int64_t n = 0;
  for (const Param* p : params_) {
    n += p->value.numel();
  }
  return n;
}

int64_t Model::num_state_elements() const {
  int64_t n = 0;
  for (const StateTensor* s : state_) {
    n += s->value.numel();
  }
  return n;
}

absl::Status Model::ValidateInputs(Backend& backend, const Tensor& inputs) const {
  const bool tokens = spec_.input().kind() == proto::InputSpec::TOKENS;
  const DType want = tokens ? DType::kS32 : DType::kF32;
  Shape expected{-1};
  expected.insert(expected.end(), spec_.input().shape().begin(), spec_.input().shape().end());
  bool shape_ok =
      inputs.rank() == static_cast<int>(expected.size()) && inputs.rank() > 0 && inputs.dim(0) >= 1;
  for (int a = 1; shape_ok && a < inputs.rank(); ++a) {
    shape_ok = inputs.dim(a) == expected[a];
  }
  if (inputs.dtype() != want || !shape_ok) {
    Shape shown = expected;
    return absl::InvalidArgumentError(absl::StrCat(
        "inputs: expected ", DTypeName(want), " of shape [N, ",
        ShapeString(Shape(shown.begin() + 1, shown.end())).substr(1), " with N >= 1, got ",
        DTypeName(inputs.dtype()), " ", ShapeString(inputs.shape())));
  }
  if (!tokens) {
    absl::Status s = backend.CheckFinite(inputs);  // "element 3 is nan"
    if (!s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("inputs: ", s.message(), " (inputs must be finite)"));
    }
  }
  return absl::OkStatus();
}

absl::Status Model::SetRules(std::shared_ptr<const CompiledRules> rules) {
  absl::Status s = root_->PlanOps(rules.get());
  if (!s.ok()) {
    absl::Status restore = root_->PlanOps(rules_.get());  // keep the previous plan
    QTRAIN_CHECK(restore.ok());
    return s;
  }
  rules_ = std::move(rules);
  return absl::OkStatus();
}

std::vector<std::pair<int, std::string>> Model::Ops() const {
  std::vector<std::pair<int, std::string>> ops;
  root_->ReportOps(&ops);
  return ops;
}

std::vector<int> Model::UnusedRules() const {
  std::vector<int> unused;
  if (!rules_) {
    return unused;
  }
  std::set<int> used;
  for (const auto& [rule, op] : Ops()) {
    used.insert(rule);
  }
  for (const Rule& r : rules_->rules()) {
    if (!used.count(r.index)) {
      unused.push_back(r.index);
    }
  }
  return unused;
}

}  // namespace qtrain::engine
