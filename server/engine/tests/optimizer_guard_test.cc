// A training step never leaves a session with infinite or NaN weights (issue 10: one step at an
// extreme learning rate filled a session with Inf and answered OK): the step is refused with
// FAILED_PRECONDITION and the weights, optimizer state and step count stay as they were.
#include <cstring>
#include <limits>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/match.h"
#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;
using ::testing::HasSubstr;

Batch Toy(int seed) {
  Batch b{Tensor::Empty(DType::kF32, {8, 4}), Tensor::Empty(DType::kS32, {8})};
  for (int i = 0; i < 32; ++i) b.inputs.data<float>()[i] = std::sin(0.7f * i + seed);
  for (int i = 0; i < 8; ++i) b.targets.data<int32_t>()[i] = i % 3;
  return b;
}

std::unique_ptr<Trainer> Make(const std::string& optimizer) {
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(R"({"input": {"shape": [4]},
      "body": {"sequential": {"layers": [{"linear": {"features": 8}},
          {"activation": {"kind": "RELU"}}, {"linear": {"features": 3}}]}}})"),
                           proto::RuleSet(), FromJson<proto::OptimizerConfig>(optimizer), 1,
                           MakeReferenceBackend());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

bool SameState(Trainer& a, const std::map<std::string, Tensor>& b) {
  const std::map<std::string, Tensor> s = a.ExportState().value();
  if (s.size() != b.size()) return false;
  for (const auto& [name, t] : s) {
    if (std::memcmp(t.raw(), b.at(name).raw(), t.nbytes()) != 0) return false;
  }
  return true;
}

TEST(OptimizerGuardTest, AnUpdateThatWouldOverflowIsRefusedAndChangesNothing) {
  int guarded = 0;  // refusals by the update's own check (not the gradient-norm check)
  for (const char* opt :
       {R"({"sgd": {}, "schedule": {"learning_rate": 3e38}})",
        R"({"sgd": {"momentum": 0.9}, "schedule": {"learning_rate": 3e38}})",
        R"({"adamw": {}, "schedule": {"learning_rate": 3e38}})",
        // Overflows on the first update: |step + decay| > 1.
        R"({"adamw": {}, "weight_decay": 10, "schedule": {"learning_rate": 3e38}})"}) {
    SCOPED_TRACE(opt);
    std::unique_ptr<Trainer> t = Make(opt);
    ASSERT_NE(t, nullptr);
    int refused = 0;
    for (int i = 0; i < 4; ++i) {
      const std::map<std::string, Tensor> before = t->ExportState().value();
      const int64_t step = t->step();
      absl::StatusOr<StepResult> r = t->TrainStep(Toy(i));
      if (r.ok()) {  // a step may still fit in float: then every value is finite
        const std::map<std::string, Tensor> after = t->ExportState().value();
        for (const auto& [name, tensor] : after) {
          for (int64_t j = 0; j < tensor.numel() && tensor.dtype() == DType::kF32; ++j) {
            ASSERT_TRUE(std::isfinite(tensor.data<float>()[j])) << name;
          }
        }
        continue;
      }
      ++refused;
      guarded += absl::StrContains(r.status().message(), "nothing was changed");
      ASSERT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
      EXPECT_THAT(r.status().message(), ::testing::AnyOf(HasSubstr("nothing was changed"),
                                                         HasSubstr("the update was skipped")));
      EXPECT_EQ(t->step(), step);
      EXPECT_TRUE(SameState(*t, before));
    }
    EXPECT_GT(refused, 0);
  }
  EXPECT_GT(guarded, 0);
}

TEST(OptimizerGuardTest, OrdinaryTrainingIsUnaffected) {
  // Large but finite steps train as before, and the bound (not the dry run) covers them after
  // the first step: the values are the same either way.
  std::unique_ptr<Trainer> t = Make(R"({"adamw": {}, "schedule": {"learning_rate": 0.01}})");
  ASSERT_NE(t, nullptr);
  for (int i = 0; i < 20; ++i) {
    absl::StatusOr<StepResult> r = t->TrainStep(Toy(i));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(std::isfinite(r->loss));
  }
  EXPECT_EQ(t->step(), 20);
}

}  // namespace
}  // namespace qtrain::engine
