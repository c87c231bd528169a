// The C++ client library against the real server on 127.0.0.1:0: every call, the server's errors
// as absl::Status, checkpoint files round trip.
#include "qtrain/client.h"

#include <unistd.h>
#include <cmath>

#include <cstdio>

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "server/rpc/tensor_convert.h"
#include "server/server_main.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

v1::Batch MakeBatch(int seed) {
  Tensor x = Tensor::Empty(DType::kF32, {8, 4});
  Tensor y = Tensor::Empty(DType::kS32, {8});
  for (int i = 0; i < 32; ++i) x.data<float>()[i] = std::cos(0.7f * i + seed);
  for (int i = 0; i < 8; ++i) y.data<int32_t>()[i] = (i + seed) % 2;
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

TEST(ClientTest, EveryCallAndErrorsAsStatus) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = server::RunningServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", (*server)->port()));

  v1::CreateSessionRequest req;
  req.set_session_id("c");
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
                      {"linear": {"features": 2}}]}}})",
                  req.mutable_model())
                  .ok());
  ASSERT_TRUE(client->CreateSession(req).ok());

  int sent = 0;
  std::vector<int64_t> steps;
  ASSERT_TRUE(client
                  ->Train(
                      "c",
                      [&](v1::Batch* b) {
                        if (sent == 5) return false;
                        *b = MakeBatch(sent++);
                        return true;
                      },
                      [&](const v1::TrainResponse& r) { steps.push_back(r.step()); })
                  .ok());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // A stream with no batch still names its session (and succeeds).
  EXPECT_TRUE(client
                  ->Train(
                      "c", [](v1::Batch*) { return false; }, nullptr)
                  .ok());

  int evaluated = 0;
  auto eval = client->Evaluate("c", [&](v1::Batch* b) {
    if (evaluated == 2) return false;
    *b = MakeBatch(evaluated++);
    return true;
  });
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->examples(), 16);

  ASSERT_TRUE(client
                  ->UpdateRules("c",
                                [] {
                                  v1::RuleSet r;
                                  auto* rule = r.add_rules();
                                  rule->set_weight_qtype("int8");
                                  rule->set_act_qtype("int8");
                                  rule->set_act_static_scale(true);
                                  return r;
                                }())
                  .ok());
  int calibrated = 0;
  auto stats = client->Calibrate("c", [&](v1::Tensor* t) {
    if (calibrated == 3) return false;
    *t = MakeBatch(calibrated++).inputs();
    return true;
  });
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->stats_size(), 1);
  EXPECT_EQ(stats->stats(0).count(), 3);
  auto again = client->GetQuantStats("c");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->stats(0).count(), 3);

  auto out = client->Forward("c", MakeBatch(0).inputs());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->shape(), ::testing::ElementsAre(8, 2));

  char path[] = "/tmp/qtrain_client_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto bytes = client->DownloadCheckpoint("c", path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_GT(*bytes, 100);
  auto info = client->UploadCheckpoint("copy", path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->step(), 5);
  auto copy_out = client->Forward("copy", MakeBatch(0).inputs());
  ASSERT_TRUE(copy_out.ok());
  EXPECT_EQ(copy_out->data(), out->data());
  std::remove(path);

  // The server's errors, code and message.
  auto missing = client->GetSession("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("\"nope\""));
  EXPECT_EQ(client->SaveCheckpoint("c").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(client->UploadCheckpoint("x", "/nonexistent").status().code(),
            absl::StatusCode::kNotFound);
  auto list = client->ListSessions();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sessions_size(), 2);
  EXPECT_TRUE(client->DeleteSession("copy").ok());
  EXPECT_EQ(client->DeleteSession("copy").code(), absl::StatusCode::kNotFound);
  (*server)->Shutdown();
}

}  // namespace
}  // namespace qtrain
