// MemoryBudget: leases reserve and return bytes exactly, refusals name what did not fit, and the
// footprint estimate comes from the spec alone (no allocation, however large the model).
#include "server/engine/memory_budget.h"

#include <sys/resource.h>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/engine/session.h"
#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;
using ::testing::HasSubstr;

TEST(MemoryBudgetTest, LeasesReserveAndReturnTheirBytes) {
  MemoryBudget budget(1000);
  {
    absl::StatusOr<MemoryBudget::Lease> a = MemoryBudget::Reserve(&budget, 600, "a");
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(budget.used(), 600);
    absl::StatusOr<MemoryBudget::Lease> b = MemoryBudget::Reserve(&budget, 500, "step b");
    ASSERT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
    EXPECT_THAT(b.status().message(), HasSubstr("step b needs about 500 B"));
    EXPECT_THAT(b.status().message(), HasSubstr("400 B free"));
    ASSERT_TRUE(a->Grow(400, "more").ok());
    EXPECT_EQ(a->Grow(1, "one more").code(), absl::StatusCode::kResourceExhausted);
    MemoryBudget::Lease moved = std::move(*a);
    EXPECT_EQ(moved.bytes(), 1000);
    EXPECT_EQ(budget.used(), 1000);
  }
  EXPECT_EQ(budget.used(), 0);
  // Saturated estimates are refused, never wrapped.
  EXPECT_FALSE(
      MemoryBudget::Reserve(&budget, std::numeric_limits<int64_t>::max(), "overflow").ok());
  EXPECT_FALSE(MemoryBudget::Reserve(&budget, -1, "negative").ok());
  EXPECT_EQ(budget.used(), 0);
  // No budget: empty leases.
  absl::StatusOr<MemoryBudget::Lease> none = MemoryBudget::Reserve(nullptr, 1 << 30, "x");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->Grow(int64_t{1} << 40, "y").ok());
}

TEST(MemoryBudgetTest, EstimatesComeFromTheSpecWithoutBuildingIt) {
  // 2^30 - 2^16 + 1 parameters: estimated instantly (Build would allocate 4 GiB).
  const auto spec = FromJson<proto::ModelSpec>(R"({"input": {"shape": [16381]},
      "body": {"sequential": {"layers": [{"linear": {"features": 65536}},
                                         {"linear": {"features": 1}}]}}, "loss": {"kind": "MSE"}})");
  absl::StatusOr<ModelFootprint> f = Model::Estimate(spec);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->parameters, 16381 * 65536 + 65536 + 65536 + 1);
  EXPECT_EQ(f->activations_per_example, 16381 + 65536 + 1);
  EXPECT_EQ(SessionBytes(*f, proto::OptimizerConfig()), f->parameters * 4 * 5);  // AdamW
  proto::OptimizerConfig sgd;
  sgd.mutable_sgd();
  EXPECT_EQ(SessionBytes(*f, sgd), f->parameters * 4 * 3);
  EXPECT_EQ(StepBytes(*f, 10, /*training=*/true), f->activations_per_example * 10 * 16);
  EXPECT_EQ(StepBytes(*f, int64_t{1} << 62, true), std::numeric_limits<int64_t>::max());
  // Estimate reports Build's errors.
  EXPECT_EQ(Model::Estimate(proto::ModelSpec()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Issue 20: under `ulimit -v` the default budget fits in the address space left, not in the
// machine's memory (a server under a 10 GiB limit once built a model its budget allowed and then
// failed its save with "out of memory").
TEST(MemoryBudgetTest, TheDefaultBudgetRespectsRlimitAs) {
  struct rlimit before;
  ASSERT_EQ(getrlimit(RLIMIT_AS, &before), 0);
  const int64_t unlimited = DefaultMemoryBudgetBytes();
  int64_t mapped = 0;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmSize:", 0) == 0) mapped = std::strtoll(line.c_str() + 7, nullptr, 10) * 1024;
  }
  ASSERT_GT(mapped, 0);
  const int64_t spare = int64_t{512} << 20;
  struct rlimit capped = before;
  capped.rlim_cur = static_cast<rlim_t>(mapped + spare);
  if (before.rlim_max != RLIM_INFINITY && capped.rlim_cur > before.rlim_max) {
    capped.rlim_cur = before.rlim_max;
  }
  ASSERT_EQ(setrlimit(RLIMIT_AS, &capped), 0);
  const int64_t limited = DefaultMemoryBudgetBytes();
  ASSERT_EQ(setrlimit(RLIMIT_AS, &before), 0);
  EXPECT_LE(limited, spare / 5 * 4 + (int64_t{64} << 20));  // what was mapped may have grown
  EXPECT_GT(limited, 0);
  EXPECT_LT(limited, unlimited);
}

TEST(MemoryBudgetTest, EachDeviceHasItsOwnPool) {
  DeviceBudgets budgets(1000);
  MemoryBudget* gpu = budgets.Add("cuda:0", 100);
  EXPECT_EQ(budgets.Add("cuda:0", 5), gpu);  // one pool per device
  EXPECT_EQ(budgets.host()->device(), "cpu:0");
  EXPECT_EQ(budgets.For("cpu:0"), budgets.host());
  EXPECT_EQ(budgets.For("cuda:0"), gpu);
  EXPECT_EQ(budgets.For("cuda:1"), nullptr);  // not bounded
  ASSERT_EQ(budgets.all().size(), 2u);
  EXPECT_EQ(budgets.all()[0].get(), budgets.host());

  auto device_lease = MemoryBudget::Reserve(gpu, 80, "weights");
  ASSERT_TRUE(device_lease.ok());
  EXPECT_EQ(budgets.host()->used(), 0);  // charged where the memory lives
  auto host_lease = MemoryBudget::Reserve(budgets.host(), 800, "an upload");
  ASSERT_TRUE(host_lease.ok());
  auto refused = MemoryBudget::Reserve(gpu, 30, "a step");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("memory budget of cuda:0 has 20 B free"));
  auto host_refused = MemoryBudget::Reserve(budgets.host(), 300, "a step");
  EXPECT_THAT(host_refused.status().message(), HasSubstr("--memory_budget_mb"));
}

TEST(MemoryBudgetTest, SessionsReserveFromTheirBackendsDevice) {
  DeviceBudgets budgets(1);  // the host (every backend's device today) cannot hold a session
  SessionOptions options;
  options.budgets = &budgets;
  auto refused = Session::Create("s", FromJson<proto::ModelSpec>(R"({"input": {"shape": [4]},
      "body": {"linear": {"features": 2}}})"),
                                 {}, {}, 1, options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  options.backend = "reference";
  refused = Session::Create("s", FromJson<proto::ModelSpec>(R"({"input": {"shape": [4]},
      "body": {"linear": {"features": 2}}})"),
                            {}, {}, 1, options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(MemoryBudgetTest, HumanBytes) {
  EXPECT_EQ(HumanBytes(512), "512 B");
  EXPECT_EQ(HumanBytes(3 << 20), "3.0 MiB");
  EXPECT_EQ(HumanBytes(int64_t{3} << 29), "1.5 GiB");
}

}  // namespace
}  // namespace qtrain::engine
