// The in-process server fixture of the integration tests: the real server on 127.0.0.1:0, a
// stub, a toy model (kSpec) with a learnable batch generator, and Create / Train helpers.
#pragma once

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/rpc/tensor_convert.h"
#include "server/server_main.h"

namespace qtrain {

template <typename M>
inline M Json(const std::string& s) {
  M m;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(s, &m).ok()) << s;
  return m;
}

inline constexpr char kSpec[] = R"({"input": {"shape": [6]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 32}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 3}}]}}})";

// A learnable toy problem: the class is the argmax of three input features.
inline v1::Batch MakeBatch(int seed, int n = 32) {
  Tensor x = Tensor::Empty(DType::kF32, {n, 6});
  Tensor y = Tensor::Empty(DType::kS32, {n});
  for (int i = 0; i < n; ++i) {
    int best = 0;
    for (int j = 0; j < 6; ++j) {
      x.data<float>()[i * 6 + j] = std::sin(1.7f * (i + 1) * (j + 1) + seed);
      if (j < 3 && x.data<float>()[i * 6 + j] > x.data<float>()[i * 6 + best]) best = j;
    }
    y.data<int32_t>()[i] = best;
  }
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

class ServerTest : public ::testing::Test {
 protected:
  // Options of the server under test; fixtures override to change limits.
  virtual void Configure(server::ServerOptions& options) {
    options.sessions.max_sessions = 4;
    options.limits.max_batch_bytes = 1 << 20;
  }

  void SetUp() override {
    server::ServerOptions options;
    options.listen = "127.0.0.1:0";
    Configure(options);
    auto s = server::RunningServer::Start(options);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                   grpc::InsecureChannelCredentials());
    stub_ = v1::Trainer::NewStub(channel_);
  }
  void TearDown() override { server_->Shutdown(); }

  v1::Session Create(const std::string& id, const std::string& rules = "{}") {
    v1::CreateSessionRequest req;
    req.set_session_id(id);
    *req.mutable_model() = Json<v1::ModelSpec>(kSpec);
    *req.mutable_rules() = Json<v1::RuleSet>(rules);
    *req.mutable_optimizer() =
        Json<v1::OptimizerConfig>(R"({"adamw": {}, "schedule": {"learning_rate": 0.01}})");
    req.set_seed(7);
    v1::Session resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->CreateSession(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  // Streams `steps` batches (all written before reading, exercising flow control) and returns
  // the responses and the final status.
  std::pair<std::vector<v1::TrainResponse>, grpc::Status> Train(
      const std::string& id, int steps, const std::function<v1::Batch(int)>& batch = nullptr) {
    grpc::ClientContext ctx;
    auto stream = stub_->Train(&ctx);
    std::vector<v1::TrainResponse> out;
    std::thread writer([&] {
      for (int i = 0; i < steps; ++i) {
        v1::TrainRequest req;
        if (i == 0) req.set_session_id(id);
        *req.mutable_batch() = batch ? batch(i) : MakeBatch(i);
        if (!stream->Write(req)) break;
      }
      stream->WritesDone();
    });
    v1::TrainResponse resp;
    while (stream->Read(&resp)) out.push_back(resp);
    writer.join();
    return {out, stream->Finish()};
  }

  std::unique_ptr<server::RunningServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Trainer::Stub> stub_;
};

}  // namespace qtrain
