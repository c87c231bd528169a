// The real server under load and at its limits: a memory budget that answers
// RESOURCE_EXHAUSTED (naming what did not fit) before any work starts and leaves the session
// intact, and concurrent streams on one session that wait their turn instead of failing.
#include <atomic>
#include <chrono>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "tests/integration/server_fixture.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

constexpr int64_t kMiB = int64_t{1} << 20;

class ServerLimitsTest : public ServerTest {
 protected:
  void Configure(server::ServerOptions& options) override {
    ServerTest::Configure(options);
    options.memory_budget_bytes = 256 * kMiB;
    options.limits.max_batch_bytes = 64 * kMiB;
  }

  grpc::Status CreateWide(const std::string& id, int64_t inputs, int64_t features) {
    v1::CreateSessionRequest req;
    req.set_session_id(id);
    *req.mutable_model() = Json<v1::ModelSpec>(
        absl::StrCat(R"({"input": {"shape": [)", inputs, R"(]}, "body": {"sequential": {"layers": [
            {"linear": {"features": )",
                     features, R"(}}, {"linear": {"features": 1}}]}}, "loss": {"kind": "MSE"}})"));
    grpc::ClientContext ctx;
    v1::Session resp;
    return stub_->CreateSession(&ctx, req, &resp);
  }

  grpc::Status Forward(const std::string& id, int64_t n) {
    v1::ForwardRequest req;
    req.set_session_id(id);
    *req.mutable_inputs() = rpc::ToWire(Tensor::Zeros(DType::kF32, {n, 1}));
    grpc::ClientContext ctx;
    v1::ForwardResponse resp;
    return stub_->Forward(&ctx, req, &resp);
  }
};

// Issue 10: a 33-byte CreateSession at 2^30 parameters, and a Forward whose activations cost
// ~64 MiB per example, aborted the server. Both are answered before anything is allocated.
TEST_F(ServerLimitsTest, RequestsOverTheMemoryBudgetAreResourceExhausted) {
  const int64_t idle = server_->budget().used();
  grpc::Status s = CreateWide("huge", 16381, 65536);  // 2^30 - 2^16 + 1 parameters
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("1073676289 parameters"));
  EXPECT_THAT(s.error_message(), HasSubstr("memory budget"));
  EXPECT_EQ(server_->budget().used(), idle);

  // [1] -> Dense(2^21) -> Dense(1): 2^21 activations per example, 16 MiB per example in a step.
  s = CreateWide("wide", 1, int64_t{1} << 21);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const int64_t with_session = server_->budget().used();
  EXPECT_GT(with_session, idle);
  s = Forward("wide", 128);
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("128 examples"));
  EXPECT_EQ(server_->budget().used(), with_session);
  EXPECT_TRUE(Forward("wide", 2).ok());  // the session still serves what fits
  EXPECT_EQ(server_->budget().used(), with_session);
  const std::string scrape = server_->metrics().Serialize();
  EXPECT_THAT(scrape, HasSubstr("qtrain_memory_bytes{device=\"cpu:0\",kind=\"budget\"} 268435456"));
  EXPECT_THAT(scrape,
              HasSubstr(absl::StrCat("qtrain_memory_bytes{device=\"cpu:0\",kind=\"reserved\"} ",
                                     with_session)));

  grpc::ClientContext ctx;
  v1::DeleteSessionRequest del;
  del.set_session_id("wide");
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(stub_->DeleteSession(&ctx, del, &deleted).ok());
  for (int i = 0; i < 100 && server_->budget().used() != idle; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the executor joins
  }
  EXPECT_EQ(server_->budget().used(), idle);
}

// Concurrent uploads were uncapped (two open 600 MiB uploads: +1.27 GiB). An upload reserves
// twice its bytes as they arrive.
TEST_F(ServerLimitsTest, AnUploadOverTheBudgetIsRefusedWhileItStreams) {
  const int64_t idle = server_->budget().used();
  grpc::ClientContext ctx;
  v1::CheckpointInfo info;
  auto writer = stub_->UploadCheckpoint(&ctx, &info);
  v1::CheckpointChunk chunk;
  chunk.set_session_id("big");
  chunk.set_data(std::string(8 * kMiB, 'x'));
  for (int i = 0; i < 32 && writer->Write(chunk); ++i) chunk.clear_session_id();
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  ASSERT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("checkpoint upload"));
  EXPECT_EQ(server_->budget().used(), idle);
}

// Issue 10: a third concurrent Train stream on one session failed with RESOURCE_EXHAUSTED
// (the session queue overflowed). Streams bound their own window, so they wait their turn.
TEST_F(ServerLimitsTest, ConcurrentStreamsOnOneSessionAllComplete) {
  Create("shared");
  constexpr int kStreams = 8, kSteps = 12;
  std::vector<std::pair<std::vector<v1::TrainResponse>, grpc::Status>> results(kStreams);
  std::vector<std::thread> threads;
  for (int i = 0; i < kStreams; ++i) {
    threads.emplace_back([&, i] { results[i] = Train("shared", kSteps); });
  }
  for (auto& t : threads) t.join();
  int64_t last = 0;
  for (const auto& [responses, status] : results) {
    ASSERT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(responses.size(), static_cast<size_t>(kSteps));
    last = std::max<int64_t>(last, responses.back().step());
  }
  EXPECT_EQ(last, kStreams * kSteps);  // every step ran once, and every result was delivered
}

// Issue 20: one large CreateSession does not hold up the others. The control plane builds models
// on several threads, so a small creation answers while a 38M-parameter model is initialised.
class ServerCreateTest : public ServerLimitsTest {
 protected:
  void Configure(server::ServerOptions& options) override {
    ServerLimitsTest::Configure(options);
    options.memory_budget_bytes = 2048 * kMiB;
  }
};

TEST_F(ServerCreateTest, ASmallCreateAnswersWhileALargeOneBuilds) {
  std::atomic<bool> large_done{false};
  grpc::Status large_status;
  std::thread large([&] {
    large_status = CreateWide("large", 6144, 6144);
    large_done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the large build has begun
  ASSERT_FALSE(large_done) << "the large model was built too fast to show anything";
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status small = CreateWide("small", 4, 4);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const bool large_still_building = !large_done;
  large.join();
  ASSERT_TRUE(small.ok()) << small.error_message();
  ASSERT_TRUE(large_status.ok()) << large_status.error_message();
  EXPECT_TRUE(large_still_building) << "the small creation waited for the large one";
  EXPECT_LT(seconds, 1.0);
}

}  // namespace
}  // namespace qtrain
