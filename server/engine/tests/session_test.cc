// Sessions and their executors: tasks run in order off the caller's thread, the queue pushes
// back, shutdown drains accepted work, several sessions train concurrently, manager limits.
#include "server/engine/session.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/sync.h"
#include "server/engine/tests/test_models.h"
#include "server/engine/worker.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;
using ::testing::HasSubstr;

constexpr char kSpec[] = R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 8}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 2}}]}}})";

Batch SmallBatch(int seed) {
  Batch b{Tensor::Empty(DType::kF32, {4, 4}), Tensor::Empty(DType::kS32, {4})};
  for (int64_t i = 0; i < 16; ++i) b.inputs.data<float>()[i] = std::cos(0.5f * i + seed);
  for (int64_t i = 0; i < 4; ++i) b.targets.data<int32_t>()[i] = (i + seed) % 2;
  return b;
}

TEST(SessionTest, TasksRunInOrderOnTheExecutor) {
  auto s = Session::Create("a", FromJson<proto::ModelSpec>(kSpec), {}, {}, 1, {1, 16});
  ASSERT_TRUE(s.ok()) << s.status();
  std::vector<int64_t> steps;
  std::atomic<bool> other_thread{true};
  qtrain::Notification done;
  const auto caller = std::this_thread::get_id();
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE((*s)->Submit([&, i](Trainer& t) {
                      other_thread = other_thread && std::this_thread::get_id() != caller;
                      auto r = t.TrainStep(SmallBatch(i));
                      steps.push_back(r.ok() ? r->step : -1);
                      if (i == 9) done.Notify();
                    })
                    .ok());
  }
  done.WaitForNotification();
  EXPECT_TRUE(other_thread);
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
  (*s)->Shutdown();
  EXPECT_EQ((*s)->info().step, 10);
}

TEST(SessionTest, BoundedQueuePushesBackAndShutdownDrains) {
  auto s = Session::Create("b", FromJson<proto::ModelSpec>(kSpec), {}, {}, 1, {1, 2});
  ASSERT_TRUE(s.ok());
  qtrain::Notification release;
  std::atomic<int> ran{0};
  ASSERT_TRUE((*s)->Submit([&](Trainer&) {
                    release.WaitForNotification();
                    ++ran;
                  })
                  .ok());
  // The executor may not have picked up the first task yet: fill until pushed back.
  int accepted = 1;
  absl::Status last;
  for (int i = 0; i < 10 && last.ok(); ++i) {
    last = (*s)->Submit([&](Trainer&) { ++ran; });
    accepted += last.ok();
  }
  EXPECT_EQ(last.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(last.message(), HasSubstr("max_queued"));
  EXPECT_LE(accepted, 3);
  release.Notify();
  (*s)->Shutdown();
  EXPECT_EQ(ran.load(), accepted);  // everything accepted ran
  EXPECT_EQ((*s)->Submit([](Trainer&) {}).code(), absl::StatusCode::kUnavailable);
}

TEST(SessionManagerTest, ConcurrentSessionsAndLimits) {
  SessionManager manager({2, {1, 8}});
  auto a = manager.Create("", FromJson<proto::ModelSpec>(kSpec), {}, {}, 1);
  auto b =
      manager.Create("named-1", FromJson<proto::ModelSpec>(kSpec), testing::Int8Rules(true), {}, 2);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->id(), "s1");
  auto c = manager.Create("", FromJson<proto::ModelSpec>(kSpec), {}, {}, 3);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(manager.Create("bad id!", FromJson<proto::ModelSpec>(kSpec), {}, {}, 3).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(manager.Get("nope").status().code(), absl::StatusCode::kNotFound);

  qtrain::Notification a_done, b_done;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE((*a)->Submit([&, i](Trainer& t) {
                      ASSERT_TRUE(t.TrainStep(SmallBatch(i)).ok());
                      if (i == 4) a_done.Notify();
                    })
                    .ok());
    ASSERT_TRUE((*b)->Submit([&, i](Trainer& t) {
                      ASSERT_TRUE(t.TrainStep(SmallBatch(i)).ok());
                      if (i == 4) b_done.Notify();
                    })
                    .ok());
  }
  a_done.WaitForNotification();
  b_done.WaitForNotification();
  auto list = manager.List();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].id, "named-1");
  EXPECT_TRUE(manager.Delete("s1").ok());
  EXPECT_EQ(manager.Delete("s1").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*a)->info().step, 5);
  EXPECT_TRUE(manager.Create("", FromJson<proto::ModelSpec>(kSpec), {}, {}, 3).ok());
}

// The backend is configuration: the manager's default, or the session's own; the same seed and
// batches train the same on the oneDNN and the reference backend (up to float rounding).
TEST(SessionManagerTest, SessionsRunOnTheBackendTheyName) {
  SessionManager manager({4, {1, 8}});
  auto fast = manager.Create("fast", FromJson<proto::ModelSpec>(kSpec), {}, {}, 7);
  auto ref =
      manager.Create("ref", FromJson<proto::ModelSpec>(kSpec), {}, {}, 7, nullptr, "reference");
  ASSERT_TRUE(fast.ok() && ref.ok());
  auto bad = manager.Create("bad", FromJson<proto::ModelSpec>(kSpec), {}, {}, 7, nullptr, "cuda");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("backend \"cuda\" is not one of onednn, reference"),
            std::string::npos)
      << bad.status();
  EXPECT_EQ(manager.Get("bad").status().code(), absl::StatusCode::kNotFound);
  std::vector<double> losses[2];
  std::string names[2];
  for (int k = 0; k < 2; ++k) {
    qtrain::Notification done;
    ASSERT_TRUE((k == 0 ? *fast : *ref)
                    ->Submit([&, k](Trainer& t) {
                      names[k] = t.backend_name();
                      for (int i = 0; i < 3; ++i) {
                        auto r = t.TrainStep(SmallBatch(i));
                        ASSERT_TRUE(r.ok()) << r.status();
                        losses[k].push_back(r->loss);
                      }
                      done.Notify();
                    })
                    .ok());
    done.WaitForNotification();
  }
  EXPECT_EQ(names[0], "onednn");
  EXPECT_EQ(names[1], "reference");
  ASSERT_EQ(losses[0].size(), 3u);
  ASSERT_EQ(losses[1].size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(losses[0][i], losses[1][i], 1e-4 * losses[1][i]) << i;
}

// The control-plane Worker with several threads: a task that blocks does not hold up the ones
// posted after it, and the destructor runs everything queued.
TEST(WorkerTest, ABlockedTaskDoesNotHoldUpTheOthersAndEverythingRuns) {
  std::atomic<int> ran{0};
  qtrain::Mutex mu;
  bool release = false;
  {
    Worker worker(3);
    worker.Post([&] {
      qtrain::MutexLock lock(&mu);
      mu.Await(
          +[](bool* r) { return *r; }, &release);  // blocks until the others ran
      ++ran;
    });
    for (int i = 0; i < 20; ++i) worker.Post([&] { ++ran; });
    for (int i = 0; i < 2000 && ran.load() < 20; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(ran.load(), 20);  // while the first is still blocked
    qtrain::MutexLock lock(&mu);
    release = true;
  }
  EXPECT_EQ(ran.load(), 21);
}

}  // namespace
}  // namespace qtrain::engine
