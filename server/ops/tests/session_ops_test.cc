// Typed session operations: results through callbacks on the executor, the durability policy
// (save before answering, the previous state back when the save fails), nothing left behind by
// a failed creation, operations on a deleted session.
#include "server/ops/session_ops.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cmath>
#include <future>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/engine/tests/test_models.h"
#include "server/store/checkpoint_io.h"

namespace qtrain::ops {
namespace {

using engine::testing::FromJson;
using ::testing::HasSubstr;

constexpr char kSpec[] = R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 8}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 2}}]}}})";
constexpr char kInt8[] = R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})";

std::shared_ptr<const engine::Batch> SmallBatch(int seed) {
  auto b = std::make_shared<engine::Batch>(
      engine::Batch{Tensor::Empty(DType::kF32, {4, 4}), Tensor::Empty(DType::kS32, {4})});
  for (int64_t i = 0; i < 16; ++i) b->inputs.data<float>()[i] = std::cos(0.5f * i + seed);
  for (int64_t i = 0; i < 4; ++i) b->targets.data<int32_t>()[i] = (i + seed) % 2;
  return b;
}

// Submits through `submit` and waits for the result; checks that it arrives once, on another
// thread.
template <typename T, typename Submit>
absl::StatusOr<T> Await(Submit submit) {
  auto promise = std::make_shared<std::promise<absl::StatusOr<T>>>();
  const std::thread::id caller = std::this_thread::get_id();
  absl::Status submitted = submit([promise, caller](absl::StatusOr<T> r) {
    EXPECT_NE(std::this_thread::get_id(), caller);
    promise->set_value(std::move(r));  // a second call would throw
  });
  if (!submitted.ok()) return submitted;
  return promise->get_future().get();
}

std::string NewDataDir() {
  static int n = 0;
  std::string dir =
      ::testing::TempDir() + "/ops_test_" + std::to_string(getpid()) + "_" + std::to_string(n++);
  mkdir(dir.c_str(), 0755);
  return dir;
}

class SessionOpsTest : public ::testing::Test {
 protected:
  void Open(bool durable) {
    if (durable) {
      auto store = store::SessionStore::Open(NewDataDir());
      ASSERT_TRUE(store.ok()) << store.status();
      store_ = std::move(*store);
    }
    engine::SessionManagerOptions o;
    sessions_ = std::make_unique<engine::SessionManager>(o);
    ops_ = std::make_unique<SessionOps>(
        SessionOpsOptions{sessions_.get(), store_.get(), nullptr, nullptr});
  }
  NewSession Request(const std::string& id) {
    NewSession r;
    r.id = id;
    r.model = FromJson<engine::proto::ModelSpec>(kSpec);
    r.seed = 7;
    return r;
  }
  std::unique_ptr<store::SessionStore> store_;
  std::unique_ptr<engine::SessionManager> sessions_;
  std::unique_ptr<SessionOps> ops_;
};

TEST_F(SessionOpsTest, TypedOperationsAnswerThroughTheirCallbacks) {
  Open(/*durable=*/true);
  absl::StatusOr<SessionSummary> created = ops_->Create(Request("a"));
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->parameters, 4 * 8 + 8 + 8 * 2 + 2);
  EXPECT_EQ(store_->LastDurableStep("a"), 0);  // durable before it was answered
  absl::StatusOr<SessionHandle> h = ops_->Bind("a");
  ASSERT_TRUE(h.ok()) << h.status();

  auto trained =
      Await<TrainResult>([&](Done<TrainResult> d) { return h->Train(SmallBatch(1), d); });
  ASSERT_TRUE(trained.ok()) << trained.status();
  EXPECT_EQ(trained->step.step, 1);
  EXPECT_EQ(trained->mode, "float");
  EXPECT_EQ(trained->last_durable_step, 0);
  EXPECT_TRUE(std::isfinite(trained->step.loss));

  auto eval =
      Await<EvalResult>([&](Done<EvalResult> d) { return h->Evaluate(SmallBatch(2), false, d); });
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->step.examples, 4);
  EXPECT_FALSE(eval->token_level);

  // A refused request is answered through the callback too, and changes nothing.
  auto bad = std::make_shared<engine::Batch>(*SmallBatch(3));
  bad->targets = Tensor::Empty(DType::kS32, {3});
  auto refused = Await<TrainResult>([&](Done<TrainResult> d) { return h->Train(bad, d); });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  auto step = Await<int64_t>([&](Done<int64_t> d) { return h->Step(d); });
  ASSERT_TRUE(step.ok());
  EXPECT_EQ(*step, 1);

  auto described = Await<SessionSummary>([&](Done<SessionSummary> d) { return h->Describe(d); });
  ASSERT_TRUE(described.ok());
  EXPECT_EQ(described->step, 1);
  EXPECT_EQ(described->backend, "onednn");
  EXPECT_EQ(described->ops.size(), 2u);

  auto forward = Await<Tensor>([&](Done<Tensor> d) {
    return h->Forward(std::make_shared<const Tensor>(SmallBatch(4)->inputs), d);
  });
  ASSERT_TRUE(forward.ok());
  EXPECT_EQ(forward->shape(), (Shape{4, 2}));
}

TEST_F(SessionOpsTest, RulesThatCannotBeSavedAreNotKept) {
  Open(/*durable=*/true);
  ASSERT_TRUE(ops_->Create(Request("r")).ok());
  absl::StatusOr<SessionHandle> h = ops_->Bind("r");
  ASSERT_TRUE(h.ok());
  // A disk quota of one byte: the save is refused, so the new rules must not stay.
  auto updated = Await<SessionSummary>([&](Done<SessionSummary> d) {
    return h->UpdateRules(FromJson<engine::proto::RuleSet>(kInt8), /*disk_limit=*/1, d);
  });
  EXPECT_EQ(updated.status().code(), absl::StatusCode::kResourceExhausted);
  auto described = Await<SessionSummary>([&](Done<SessionSummary> d) { return h->Describe(d); });
  ASSERT_TRUE(described.ok());
  EXPECT_EQ(described->rules.rules_size(), 0);
  auto trained =
      Await<TrainResult>([&](Done<TrainResult> d) { return h->Train(SmallBatch(1), d); });
  ASSERT_TRUE(trained.ok());
  EXPECT_EQ(trained->mode, "float");

  updated = Await<SessionSummary>([&](Done<SessionSummary> d) {
    return h->UpdateRules(FromJson<engine::proto::RuleSet>(kInt8), /*disk_limit=*/0, d);
  });
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->rules.rules_size(), 1);
  trained = Await<TrainResult>([&](Done<TrainResult> d) { return h->Train(SmallBatch(2), d); });
  ASSERT_TRUE(trained.ok());
  EXPECT_EQ(trained->mode, "qat");
}

TEST_F(SessionOpsTest, AnUploadThatCannotBeSavedGivesTheSessionItsStateBack) {
  Open(/*durable=*/true);
  ASSERT_TRUE(ops_->Create(Request("src")).ok());
  ASSERT_TRUE(ops_->Create(Request("dst")).ok());
  absl::StatusOr<SessionHandle> src = ops_->Bind("src");
  absl::StatusOr<SessionHandle> dst = ops_->Bind("dst");
  ASSERT_TRUE(src.ok() && dst.ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        Await<TrainResult>([&](Done<TrainResult> d) { return src->Train(SmallBatch(i), d); }).ok());
  }
  auto encoded = Await<FileResult>([&](Done<FileResult> d) { return src->EncodeCheckpoint(d); });
  ASSERT_TRUE(encoded.ok()) << encoded.status();
  auto decoded = store::DecodeCheckpoint(encoded->bytes);
  ASSERT_TRUE(decoded.ok());
  auto file = std::make_shared<const store::SafetensorsFile>(*std::move(decoded));
  const auto inputs = std::make_shared<const Tensor>(SmallBatch(9)->inputs);
  auto before = Await<Tensor>([&](Done<Tensor> d) { return dst->Forward(inputs, d); });
  ASSERT_TRUE(before.ok());

  auto refused = Await<LoadResult>([&](Done<LoadResult> d) {
    return dst->Load(file, static_cast<int64_t>(encoded->bytes.size()), /*disk_limit=*/1, d);
  });
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.status().message(), HasSubstr("not loaded"));
  auto after = Await<Tensor>([&](Done<Tensor> d) { return dst->Forward(inputs, d); });
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(0, std::memcmp(before->data<float>(), after->data<float>(), before->nbytes()));
  EXPECT_EQ(*Await<int64_t>([&](Done<int64_t> d) { return dst->Step(d); }), 0);

  auto loaded = Await<LoadResult>([&](Done<LoadResult> d) {
    return dst->Load(file, static_cast<int64_t>(encoded->bytes.size()), 0, d);
  });
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->step, 3);
  EXPECT_EQ(store_->LastDurableStep("dst"), 3);
  auto same = Await<Tensor>([&](Done<Tensor> d) { return src->Forward(inputs, d); });
  after = Await<Tensor>([&](Done<Tensor> d) { return dst->Forward(inputs, d); });
  ASSERT_TRUE(same.ok() && after.ok());
  EXPECT_EQ(0, std::memcmp(same->data<float>(), after->data<float>(), same->nbytes()));
}

TEST_F(SessionOpsTest, AFailedCreationLeavesNothingBehind) {
  Open(/*durable=*/true);
  NewSession r = Request("gone");
  r.disk_limit = 1;
  absl::StatusOr<SessionSummary> created = ops_->Create(r);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ops_->Bind("gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->LastDurableStep("gone"), -1);

  r = Request("quota");
  r.reserve = [](const std::string& id, int64_t parameters) {
    return absl::ResourceExhaustedError(id + " " + std::to_string(parameters));
  };
  created = ops_->Create(r);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(created.status().message(), HasSubstr("quota 58"));
  EXPECT_TRUE(ops_->List().empty());

  r = Request("dp");
  r.world_size = 2;
  created = ops_->Create(r);
  EXPECT_EQ(created.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(created.status().message(), HasSubstr("data_parallel.world_size 2"));
}

TEST_F(SessionOpsTest, WithoutADataDirNothingIsSavedAndSaveIsRefused) {
  Open(/*durable=*/false);
  ASSERT_TRUE(ops_->Create(Request("m")).ok());
  absl::StatusOr<SessionHandle> h = ops_->Bind("m");
  ASSERT_TRUE(h.ok());
  auto saved = Await<SaveResult>([&](Done<SaveResult> d) { return h->Save(0, d); });
  EXPECT_EQ(saved.status().code(), absl::StatusCode::kFailedPrecondition);
  // UpdateRules needs no save then.
  auto updated = Await<SessionSummary>([&](Done<SessionSummary> d) {
    return h->UpdateRules(FromJson<engine::proto::RuleSet>(kInt8), 1, d);
  });
  EXPECT_TRUE(updated.ok()) << updated.status();
}

TEST_F(SessionOpsTest, OperationsOnADeletedSessionAreRefusedWithoutACallback) {
  Open(/*durable=*/true);
  ASSERT_TRUE(ops_->Create(Request("d")).ok());
  absl::StatusOr<SessionHandle> h = ops_->Bind("d");
  ASSERT_TRUE(h.ok());
  ASSERT_TRUE(ops_->Delete("d").ok());
  EXPECT_EQ(store_->LastDurableStep("d"), -1);
  bool called = false;
  absl::Status s = h->Train(SmallBatch(1), [&](absl::StatusOr<TrainResult>) { called = true; });
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(called);
  EXPECT_EQ(ops_->Delete("d").code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace qtrain::ops
