// The qtrain-server binary as users run it: --help, health checking, kill -9 during training
// and a restart that brings sessions back at their last durable step, bit-identical.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/byte_buffer.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "kernels/sync.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/rpc/tensor_convert.h"
#include "server/store/checkpoint_io.h"
#include "server/store/session_checkpoint.h"
#include "tests/integration/server_process.h"

namespace qtrain {
namespace {

v1::Batch MakeBatch(int seed) {
  Tensor x = Tensor::Empty(DType::kF32, {16, 6});
  Tensor y = Tensor::Empty(DType::kS32, {16});
  for (int i = 0; i < 96; ++i) x.data<float>()[i] = std::sin(0.9f * i + seed);
  for (int i = 0; i < 16; ++i) y.data<int32_t>()[i] = (i + seed) % 3;
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

// Creates session `id` with the model of `spec_json`.
grpc::Status CreateSession(v1::Trainer::Stub* stub, const std::string& id,
                           const std::string& spec_json) {
  v1::CreateSessionRequest req;
  req.set_session_id(id);
  if (!google::protobuf::util::JsonStringToMessage(spec_json, req.mutable_model()).ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad spec JSON in the test");
  }
  v1::Session created;
  grpc::ClientContext ctx;
  return stub->CreateSession(&ctx, req, &created);
}

TEST(ServerProcessTest, HelpDocumentsTheFlags) {
  FILE* p = popen((std::string(kServer) + " --help 2>&1").c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  pclose(p);
  for (const char* flag : {"--listen", "--data_dir", "--autosave_steps", "--threads",
                           "--max_sessions", "--max_batch_bytes", "--max_queued"}) {
    EXPECT_THAT(out, ::testing::HasSubstr(flag));
  }
}

// grpc.health.v1.Health/Check of `service` through a generic stub; the serialized response.
std::string HealthCheck(const std::shared_ptr<grpc::Channel>& channel, const std::string& service) {
  grpc::GenericStub generic(channel);
  grpc::ClientContext ctx;
  // HealthCheckRequest{service}: field 1, length-delimited (names here are < 128 bytes).
  std::string req =
      service.empty() ? "" : absl::StrCat("\x0a", std::string(1, service.size()), service);
  grpc::Slice slice(req);
  grpc::ByteBuffer request(&slice, 1);
  grpc::ByteBuffer response;
  grpc::Status status;
  qtrain::Notification done;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) {
                      status = s;
                      done.Notify();
                    });
  done.WaitForNotification();
  if (!status.ok()) return "error: " + status.error_message();
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return "error: undecodable response";
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

TEST(ServerProcessTest, HealthCheckAnswersServing) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ServerProcess server(dir);
  const std::string serving("\x08\x01", 2);  // status: SERVING
  EXPECT_EQ(HealthCheck(server.Channel(), ""), serving);
  EXPECT_EQ(HealthCheck(server.Channel(), "qtrain.v1.Trainer"), serving);
  EXPECT_THAT(HealthCheck(server.Channel(), "no.such.Service"), ::testing::HasSubstr("error"));
  const int exit = server.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit) && WEXITSTATUS(exit) == 0);  // graceful shutdown
}

// Runs qtrain-server with `args` (bounded by timeout(1)); its exit status and output.
std::pair<int, std::string> RunServer(const std::string& args) {
  FILE* p = popen(absl::StrCat("timeout 20 ", kServer, " ", args, " 2>&1").c_str(), "r");
  if (p == nullptr) return {-1, ""};
  std::string out;
  char buf[512];
  while (fgets(buf, sizeof(buf), p) != nullptr) out += buf;
  return {pclose(p), out};
}

// Every way a start can fail ends with exit 1 and the reason: never a crash, never a second
// server beside the first on its port or data dir.
TEST(ServerProcessTest, StartupErrorsExitOneWithTheReason) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ServerProcess first(dir);
  const std::string other = absl::StrCat("--data_dir=", dir, "/other");
  struct Case {
    std::string args, reason;
  } cases[] = {
      {absl::StrCat("--listen=127.0.0.1:", first.port(), " --metrics_listen=127.0.0.1:0 ", other),
       absl::StrCat("cannot listen on --listen=127.0.0.1:", first.port())},
      {absl::StrCat("--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:", first.metrics_port_, " ",
                    other),
       "cannot serve metrics on 127.0.0.1:"},
      {"--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --data_dir=" + std::string(dir),
       absl::StrCat("data dir ", dir, " is in use by another qtrain-server (pid")},
      {"--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --data_dir=/proc/qtrain",
       "cannot create /proc/qtrain"},
  };
  for (const Case& c : cases) {
    const auto [status, out] = RunServer(c.args);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << c.args << ": " << status << out;
    EXPECT_THAT(out, ::testing::HasSubstr(c.reason)) << c.args;
  }
  // An ISA cap that is no level names the variable and the levels (the environment is inherited
  // by the child; this test runs single-threaded here).
  setenv("QTRAIN_MAX_ISA", "avx9", 1);
  const auto [status, out] =
      RunServer(absl::StrCat("--listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 ", other));
  unsetenv("QTRAIN_MAX_ISA");
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1) << status << out;
  EXPECT_THAT(out, ::testing::HasSubstr("QTRAIN_MAX_ISA=\"avx9\" is not an ISA level; use"));
  // The first server is untouched.
  EXPECT_EQ(HealthCheck(first.Channel(), ""), std::string("\x08\x01", 2));
}

// Below x86-64-v3 (here: capped to it) the server starts with a warning, says the reference loops
// run int8, and answers GetServerInfo with that level.
TEST(ServerProcessTest, BelowX8664V3ItWarnsAndRunsTheReferenceInt8) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  setenv("QTRAIN_MAX_ISA", "baseline", 1);  // inherited by the forked server
  ServerProcess server(dir);
  unsetenv("QTRAIN_MAX_ISA");
  std::ifstream in(std::string(dir) + "/server.log");
  const std::string log((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(log, ::testing::HasSubstr("(below x86-64-v3); int8 runs on the reference loops"));
  EXPECT_THAT(log, ::testing::HasSubstr("matmul s8xs8 256x1024x1024 -> reference"));
  v1::ServerInfo info;
  grpc::ClientContext ctx;
  ASSERT_TRUE(server.Stub()->GetServerInfo(&ctx, v1::GetServerInfoRequest(), &info).ok());
  EXPECT_EQ(info.active_isa(), "baseline");
  EXPECT_EQ(info.isa_cap(), "baseline");
  for (const v1::Int8Kernel& k : info.int8_kernels()) EXPECT_EQ(k.chosen(), "reference") << k.op();
}

// GET /metrics over a plain socket.
TEST(ServerProcessTest, MetricsScrapePassesPromtool) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ServerProcess server(dir);
  ASSERT_GT(server.metrics_port_, 0);
  auto stub = server.Stub();
  const char* spec = R"({"input": {"shape": [6]},
      "body": {"sequential": {"layers": [{"linear": {"features": 3}}]}}})";
  // `steps` training steps on session `id`.
  auto train = [&](const std::string& id, int steps) {
    grpc::ClientContext tctx;
    auto stream = stub->Train(&tctx);
    for (int i = 0; i < steps; ++i) {
      v1::TrainRequest r;
      if (i == 0) r.set_session_id(id);
      *r.mutable_batch() = MakeBatch(i);
      EXPECT_TRUE(stream->Write(r));
    }
    stream->WritesDone();
    v1::TrainResponse resp;
    while (stream->Read(&resp)) {
    }
    return stream->Finish();
  };
  ASSERT_TRUE(CreateSession(stub.get(), "m", spec).ok());
  ASSERT_TRUE(train("m", 6).ok());  // past --autosave_steps=5
  ASSERT_TRUE(CreateSession(stub.get(), "gone", spec).ok());
  ASSERT_TRUE(train("gone", 1).ok());
  {
    grpc::ClientContext ctx;
    v1::DeleteSessionRequest del;
    del.set_session_id("gone");
    v1::DeleteSessionResponse deleted;
    ASSERT_TRUE(stub->DeleteSession(&ctx, del, &deleted).ok());
  }
  {  // two calibration batches under an SRQ rule
    grpc::ClientContext ctx;
    v1::UpdateRulesRequest rules;
    rules.set_session_id("m");
    auto* rule = rules.mutable_rules()->add_rules();
    rule->set_weight_qtype("int8");
    rule->set_act_qtype("int8");
    rule->set_act_static_scale(true);
    v1::Session updated;
    ASSERT_TRUE(stub->UpdateRules(&ctx, rules, &updated).ok());
    grpc::ClientContext cctx;
    auto cal = stub->Calibrate(&cctx);
    for (int i = 0; i < 2; ++i) {
      v1::CalibrateRequest r;
      r.set_session_id("m");
      *r.mutable_inputs() = MakeBatch(i).inputs();
      ASSERT_TRUE(cal->Write(r));
    }
    cal->WritesDone();
    v1::CalibrateResponse progress;
    while (cal->Read(&progress)) {
    }
    ASSERT_TRUE(cal->Finish().ok());
  }
  grpc::ClientContext bad;
  v1::GetSessionRequest get;
  get.set_session_id("missing");
  v1::Session none;
  EXPECT_EQ(stub->GetSession(&bad, get, &none).error_code(), grpc::StatusCode::NOT_FOUND);

  const std::string text = Scrape(server.metrics_port_);
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_steps_total{mode=\"float\"} 7"));
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_samples_total{mode=\"float\"} 112"));
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_steps_total{mode=\"calibrate\"} 2"));
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_sessions 1"));
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_loss{session=\"m\"}"));
  EXPECT_THAT(text, ::testing::Not(::testing::HasSubstr("session=\"gone\"")));
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_checkpoint_bytes_total{kind=\"autosave\"}"));
  EXPECT_THAT(text,
              ::testing::HasSubstr(
                  "grpc_server_handled_total{grpc_code=\"NOT_FOUND\",grpc_method=\"GetSession\","
                  "grpc_service=\"qtrain.v1.Trainer\",grpc_type=\"unary\"} 1"));
  EXPECT_THAT(text, ::testing::HasSubstr("qtrain_step_seconds_bucket{mode=\"float\""));
  const std::string path = std::string(dir) + "/metrics.txt";
  FILE* f = fopen(path.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fputs(text.c_str(), f);
  fclose(f);
  ASSERT_EQ(system("command -v promtool > /dev/null"), 0)
      << "promtool is missing: scripts/install_deps.sh installs Debian's prometheus";
  const int rc = system(("promtool check metrics < " + path).c_str());
  EXPECT_EQ(rc, 0) << text;
}

// The session's step, or -1 when GetSession fails.
int64_t StepOf(v1::Trainer::Stub* stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::GetSessionRequest get;
  get.set_session_id(id);
  v1::Session got;
  return stub->GetSession(&ctx, get, &got).ok() ? got.step() : -1;
}

TEST(ServerProcessTest, KillDashNineThenRestartComesBackAtTheDurableStep) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  int64_t durable = -1;
  {
    ServerProcess server(dir);
    auto stub = server.Stub();
    ASSERT_TRUE(CreateSession(stub.get(), "crash", R"({"input": {"shape": [6]},
        "body": {"sequential": {"layers": [{"linear": {"features": 16}},
          {"activation": {"kind": "RELU"}}, {"linear": {"features": 3}}]}}})")
                    .ok());
    grpc::ClientContext tctx;
    auto stream = stub->Train(&tctx);
    for (int i = 0; i < 12; ++i) {
      v1::TrainRequest r;
      if (i == 0) r.set_session_id("crash");
      *r.mutable_batch() = MakeBatch(i);
      ASSERT_TRUE(stream->Write(r));
      v1::TrainResponse resp;
      ASSERT_TRUE(stream->Read(&resp));
      durable = resp.last_durable_step();
    }
    EXPECT_EQ(durable, 10);                   // autosave every 5 steps
    const int status = server.Kill(SIGKILL);  // no chance to save step 12
    EXPECT_TRUE(WIFSIGNALED(status));
  }
  // The durable checkpoint on disk is intact and at step 10.
  auto bytes = store::ReadWholeFile(std::string(dir) + "/sessions/crash.safetensors", 1 << 30);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  auto file = store::DecodeCheckpoint(*bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata.at("step"), "10");

  ServerProcess restarted(dir);
  auto stub = restarted.Stub();
  EXPECT_EQ(StepOf(stub.get(), "crash"), 10);
  // Weights bit-identical to that checkpoint.
  grpc::ClientContext dctx;
  v1::DownloadCheckpointRequest dreq;
  dreq.set_session_id("crash");
  auto reader = stub->DownloadCheckpoint(&dctx, dreq);
  std::string downloaded;
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) downloaded += chunk.data();
  ASSERT_TRUE(reader->Finish().ok());
  auto restored = store::DecodeCheckpoint(downloaded);
  ASSERT_TRUE(restored.ok());
  for (const auto& [name, t] : file->tensors) {
    ASSERT_TRUE(restored->tensors.count(name)) << name;
    const Tensor& r = restored->tensors.at(name);
    ASSERT_EQ(r.nbytes(), t.nbytes()) << name;
    EXPECT_EQ(std::memcmp(r.raw(), t.raw(), t.nbytes()), 0) << name;
  }
  const int exit = restarted.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit) && WEXITSTATUS(exit) == 0);  // graceful shutdown exits 0
}

// Issue 12: SIGTERM drains before it stops. Readiness turns NOT_SERVING at once while liveness
// stays SERVING, new work is refused UNAVAILABLE, the process exits 0 within its deadline, and
// every session is saved (here, 7 steps that no autosave had made durable).
TEST(ServerProcessTest, SigtermDrainsThenSavesEverySessionAndExitsZero) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  {
    ServerProcess server(dir, {"--autosave_steps=1000", "--drain_grace_seconds=2",
                               "--shutdown_deadline_seconds=10"});
    auto stub = server.Stub();
    auto health = grpc::health::v1::Health::NewStub(server.Channel());
    auto status_of = [&](const std::string& service) {
      grpc::health::v1::HealthCheckRequest req;
      req.set_service(service);
      grpc::health::v1::HealthCheckResponse resp;
      grpc::ClientContext ctx;
      const grpc::Status s = health->Check(&ctx, req, &resp);
      return s.ok() ? static_cast<int>(resp.status()) : -1;
    };
    constexpr int kServing = grpc::health::v1::HealthCheckResponse::SERVING;
    constexpr int kNotServing = grpc::health::v1::HealthCheckResponse::NOT_SERVING;
    for (const char* probe : {"liveness", "startup", "readiness", ""}) {
      EXPECT_EQ(status_of(probe), kServing) << probe;
    }
    ASSERT_TRUE(CreateSession(stub.get(), "drain", R"({"input": {"shape": [6]},
        "body": {"sequential": {"layers": [{"linear": {"features": 3}}]}}})")
                    .ok());
    grpc::ClientContext tctx;
    auto stream = stub->Train(&tctx);
    v1::TrainResponse last;
    for (int i = 0; i < 7; ++i) {
      v1::TrainRequest r;
      if (i == 0) r.set_session_id("drain");
      *r.mutable_batch() = MakeBatch(i);
      ASSERT_TRUE(stream->Write(r));
      ASSERT_TRUE(stream->Read(&last));
    }
    EXPECT_EQ(last.step(), 7);
    EXPECT_EQ(last.last_durable_step(), 0);

    const auto signalled = std::chrono::steady_clock::now();
    server.Signal(SIGTERM);
    int readiness = kServing;
    for (int i = 0; i < 50 && readiness == kServing; ++i) {
      readiness = status_of("readiness");
      if (readiness == kServing) usleep(20 * 1000);
    }
    EXPECT_EQ(readiness, kNotServing);
    EXPECT_EQ(status_of("liveness"), kServing);
    // New work is refused, also on a stream that was open before the signal.
    EXPECT_EQ(CreateSession(stub.get(), "late", R"({"input": {"shape": [6]},
        "body": {"sequential": {"layers": [{"linear": {"features": 3}}]}}})")
                  .error_code(),
              grpc::StatusCode::UNAVAILABLE);
    {  // downloads and exports too (issue 20)
      v1::DownloadCheckpointRequest req;
      req.set_session_id("drain");
      grpc::ClientContext dctx;
      auto reader = stub->DownloadCheckpoint(&dctx, req);
      v1::CheckpointChunk chunk;
      EXPECT_FALSE(reader->Read(&chunk));
      const grpc::Status refused = reader->Finish();
      EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
    }
    v1::TrainRequest more;
    *more.mutable_batch() = MakeBatch(8);
    stream->Write(more);
    stream->WritesDone();
    v1::TrainResponse extra;
    while (stream->Read(&extra)) {
    }
    const grpc::Status ended = stream->Finish();
    EXPECT_EQ(ended.error_code(), grpc::StatusCode::UNAVAILABLE) << ended.error_message();
    EXPECT_THAT(ended.error_message(), ::testing::HasSubstr("draining"));

    const int exit = server.Wait();
    EXPECT_TRUE(WIFEXITED(exit) && WEXITSTATUS(exit) == 0);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - signalled).count();
    EXPECT_GE(seconds, 1.9);  // the grace period
    EXPECT_LT(seconds, 10.0);
  }
  ServerProcess restarted(dir);
  auto stub = restarted.Stub();
  EXPECT_EQ(StepOf(stub.get(), "drain"), 7);  // saved during the drain
}

// --log_format=json: every line the server writes, from start to drain, is one JSON object with
// ts, level, event and msg.
TEST(ServerProcessTest, JsonLogsAreOneObjectPerLine) {
  char dir[] = "/tmp/qtrain_proc_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  ServerProcess server(dir, {"--log_format=json"});
  ASSERT_GT(server.port(), 0);
  const int exit = server.Kill(SIGTERM);
  EXPECT_TRUE(WIFEXITED(exit) && WEXITSTATUS(exit) == 0);
  std::ifstream in(server.log_);
  std::string line;
  std::vector<std::string> events;
  while (std::getline(in, line)) {
    ASSERT_EQ(line.front(), '{') << line;
    ASSERT_EQ(line.back(), '}') << line;
    for (const char* key : {"\"ts\":\"", "\"level\":\"", "\"event\":\"", "\"msg\":\""}) {
      EXPECT_NE(line.find(key), std::string::npos) << key << " in " << line;
    }
    const size_t at = line.find("\"event\":\"") + 9;
    events.push_back(line.substr(at, line.find('"', at) - at));
  }
  EXPECT_THAT(events, ::testing::IsSupersetOf(
                          {"listening", "cpu", "memory_budget", "metrics", "draining", "stopped"}));
}

}  // namespace
}  // namespace qtrain
