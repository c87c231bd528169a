// The engine's shared state under concurrent callers, as the gRPC layer drives it: many threads
// creating, finding, feeding and deleting sessions (some deleted from their own executor), on
// one memory budget, while others list them. Meant for ThreadSanitizer (make tsan, label tsan),
// and checks its own invariants in every build.
#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/engine/session.h"
#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;

constexpr char kSpec[] = R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 8}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 3}}]}}})";

Batch Small(int seed) {
  Batch b{Tensor::Empty(DType::kF32, {4, 4}), Tensor::Empty(DType::kS32, {4})};
  for (int i = 0; i < 16; ++i) b.inputs.data<float>()[i] = 0.1f * ((i * 7 + seed) % 11) - 0.5f;
  for (int i = 0; i < 4; ++i) b.targets.data<int32_t>()[i] = (i + seed) % 3;
  return b;
}

TEST(EngineConcurrencyTest, SessionsBudgetAndQueuesUnderManyThreads) {
  DeviceBudgets budgets(int64_t{64} << 20);
  MemoryBudget& budget = *budgets.host();
  SessionManagerOptions options;
  options.max_sessions = 8;
  options.session.max_queued = 4;
  options.session.budgets = &budgets;
  SessionManager manager(options);
  const proto::ModelSpec spec = FromJson<proto::ModelSpec>(kSpec);
  std::atomic<int> steps{0}, refused{0};
  std::vector<std::thread> threads;
  for (int w = 0; w < 6; ++w) {
    threads.emplace_back([&, w] {
      for (int i = 0; i < 12; ++i) {
        const std::string id = absl::StrCat("w", w, "_", i % 3);
        absl::StatusOr<std::shared_ptr<Session>> s = manager.Get(id);
        if (!s.ok()) s = manager.Create(id, spec, testing::Int8Rules(i % 2 == 0), {}, w);
        if (!s.ok()) {  // max_sessions, or another thread created it first
          ++refused;
          continue;
        }
        for (int j = 0; j < 3; ++j) {
          const auto admission =
              j % 2 ? Session::Admission::kWindowed : Session::Admission::kBounded;
          absl::Status submitted = (*s)->Submit(
              [&, j](Trainer& t) {
                if (t.TrainStep(Small(j)).ok()) ++steps;
              },
              admission);
          if (!submitted.ok()) ++refused;
        }
        if (i % 4 == 3) {
          // Deleting from the session's own task parks it; another thread joins it later.
          (void)(*s)->Submit([&manager, id](Trainer&) { (void)manager.Delete(id); });
        }
        if (i % 5 == 4) (void)manager.List();
      }
    });
  }
  for (auto& t : threads) t.join();
  manager.ShutdownAll();
  EXPECT_GT(steps.load(), 0);
  EXPECT_TRUE(manager.List().empty());
  EXPECT_EQ(budget.used(), 0);  // every session's lease came back, parked ones included
}

}  // namespace
}  // namespace qtrain::engine
