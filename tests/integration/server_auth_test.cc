// Authentication, roles, tenant isolation, quotas and the audit log on the real server over TLS
// (certificates made at test time by openssl): every Trainer RPC under every role, tenant A
// against tenant B, restart keeps ownership, health without credentials, tokens that rotate.
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <chrono>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <google/protobuf/descriptor.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpc/reflection/v1/reflection.grpc.pb.h"
#include "server/rpc/access.h"
#include "server/store/safetensors.h"
#include "tests/integration/server_fixture.h"
#include "tests/integration/test_certs.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

constexpr char kAdmin[] = "tok-admin";  // tenant ops
constexpr char kTrainerA[] = "tok-a-trainer";
constexpr char kReaderA[] = "tok-a-reader";
constexpr char kTrainerB[] = "tok-b-trainer";

std::string Token(const std::string& token, const std::string& tenant, const std::string& role) {
  return absl::StrCat(R"({"sha256": ")", rpc::Sha256Hex(token), R"(", "tenant": ")", tenant,
                      R"(", "role": ")", role, R"("})");
}

class ServerAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/qtrain_auth_XXXXXX";
    dir_ = mkdtemp(dir);
    WriteAccess("");
    Start();
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    (void)std::system(("rm -rf " + dir_).c_str());
  }

  // The access file: the four tokens above, plus `tenants` (the JSON of the "tenants" member).
  void WriteAccess(const std::string& tenants, const std::string& extra_tokens = "") {
    const std::string tmp = dir_ + "/access.json.tmp";
    std::ofstream(tmp) << "{\"tokens\": [" << Token(kAdmin, "ops", "admin") << ","
                       << Token(kTrainerA, "team-a", "trainer") << ","
                       << Token(kReaderA, "team-a", "reader") << ","
                       << Token(kTrainerB, "team-b", "trainer") << extra_tokens << "]"
                       << (tenants.empty() ? "" : ", \"tenants\": " + tenants) << "}";
    ASSERT_EQ(std::rename(tmp.c_str(), (dir_ + "/access.json").c_str()), 0);
  }

  void Start() {
    server::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.data_dir = dir_ + "/data";
    o.tls_cert = certs_.Path("server.pem");
    o.tls_key = certs_.Path("server.key");
    o.auth_tokens = dir_ + "/access.json";
    o.audit_log = dir_ + "/audit.log";
    o.health_listen = "127.0.0.1:0";
    o.sessions.max_sessions = 32;
    o.limits.max_batch_bytes = 1 << 20;
    auto s = server::RunningServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    channel_ = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()), certs_.Client());
    stub_ = v1::Trainer::NewStub(channel_);
  }
  void Restart() {
    server_->Shutdown();
    server_.reset();
    Start();
  }

  std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
    auto ctx = std::make_unique<grpc::ClientContext>();
    if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return ctx;
  }

  // An SRQ session (int8 with static activation scales), so that Calibrate has work.
  static constexpr char kSrqRules[] =
      R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": true}]})";
  grpc::Status Create(const std::string& token, const std::string& id) {
    v1::CreateSessionRequest req;
    req.set_session_id(id);
    *req.mutable_model() = Json<v1::ModelSpec>(kSpec);
    *req.mutable_rules() = Json<v1::RuleSet>(kSrqRules);
    *req.mutable_optimizer() =
        Json<v1::OptimizerConfig>(R"({"adamw": {}, "schedule": {"learning_rate": 0.01}})");
    v1::Session resp;
    return stub_->CreateSession(Ctx(token).get(), req, &resp);
  }

  std::vector<std::string> List(const std::string& token) {
    v1::ListSessionsResponse resp;
    const grpc::Status s = stub_->ListSessions(Ctx(token).get(), {}, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    std::vector<std::string> ids;
    for (const v1::Session& session : resp.sessions()) {
      ids.push_back(session.tenant().empty() ? session.session_id()
                                             : session.tenant() + ":" + session.session_id());
    }
    return ids;
  }

  // Streams `steps` Train batches into `id`.
  grpc::Status Train(const std::string& token, const std::string& id, int steps = 1) {
    auto ctx = Ctx(token);
    auto stream = stub_->Train(ctx.get());
    for (int i = 0; i < steps; ++i) {
      v1::TrainRequest req;
      req.set_session_id(id);
      *req.mutable_batch() = MakeBatch(i);
      if (!stream->Write(req)) break;
    }
    stream->WritesDone();
    v1::TrainResponse resp;
    while (stream->Read(&resp)) {
    }
    return stream->Finish();
  }

  // A Train stream on `id` that has answered its first step (and so holds a stream slot).
  struct OpenStream {
    std::unique_ptr<grpc::ClientContext> ctx;
    std::unique_ptr<grpc::ClientReaderWriter<v1::TrainRequest, v1::TrainResponse>> stream;
  };
  OpenStream OpenTrain(const std::string& token, const std::string& id) {
    OpenStream open{Ctx(token), nullptr};
    open.stream = stub_->Train(open.ctx.get());
    v1::TrainRequest req;
    req.set_session_id(id);
    *req.mutable_batch() = MakeBatch(0);
    v1::TrainResponse resp;
    EXPECT_TRUE(open.stream->Write(req) && open.stream->Read(&resp));
    return open;
  }

  grpc::Status Download(const std::string& token, const std::string& id, std::string* bytes) {
    v1::DownloadCheckpointRequest req;
    req.set_session_id(id);
    auto ctx = Ctx(token);
    auto reader = stub_->DownloadCheckpoint(ctx.get(), req);
    v1::CheckpointChunk chunk;
    while (reader->Read(&chunk)) *bytes += chunk.data();
    return reader->Finish();
  }

  // ImportWeights of kSpec from PyTorch-named float weights.
  grpc::Status Import(const std::string& token, const std::string& id) {
    store::SafetensorsFile file;
    for (const auto& [name, shape] :
         std::vector<std::pair<std::string, Shape>>{{"Dense_0.weight", {32, 6}},
                                                    {"Dense_0.bias", {32}},
                                                    {"Dense_1.weight", {3, 32}},
                                                    {"Dense_1.bias", {3}}}) {
      file.tensors[name] = Tensor::Zeros(DType::kF32, shape);
    }
    auto ctx = Ctx(token);
    v1::Session session;
    auto writer = stub_->ImportWeights(ctx.get(), &session);
    v1::ImportRequest req;
    req.set_session_id(id);
    *req.mutable_model() = Json<v1::ModelSpec>(kSpec);
    req.set_data(store::SerializeSafetensors(file));
    writer->Write(req);
    writer->WritesDone();
    return writer->Finish();
  }

  grpc::Status Upload(const std::string& token, const std::string& id, const std::string& bytes) {
    auto ctx = Ctx(token);
    v1::CheckpointInfo info;
    auto writer = stub_->UploadCheckpoint(ctx.get(), &info);
    v1::CheckpointChunk chunk;
    chunk.set_session_id(id);
    chunk.set_data(bytes);
    writer->Write(chunk);
    writer->WritesDone();
    return writer->Finish();
  }

  // Calls `method` of the Trainer service on session `id` with the minimal valid request.
  grpc::Status Invoke(const std::string& method, const std::string& token, const std::string& id) {
    auto ctx = Ctx(token);
    const v1::Batch batch = MakeBatch(0);
    if (method == "CreateSession") return Create(token, id);
    if (method == "GetSession") {
      v1::GetSessionRequest req;
      req.set_session_id(id);
      v1::Session resp;
      return stub_->GetSession(ctx.get(), req, &resp);
    }
    if (method == "ListSessions") {
      v1::ListSessionsResponse resp;
      return stub_->ListSessions(ctx.get(), {}, &resp);
    }
    if (method == "DeleteSession") {
      v1::DeleteSessionRequest req;
      req.set_session_id(id);
      v1::DeleteSessionResponse resp;
      return stub_->DeleteSession(ctx.get(), req, &resp);
    }
    if (method == "UpdateRules") {
      v1::UpdateRulesRequest req;
      req.set_session_id(id);
      *req.mutable_rules() = Json<v1::RuleSet>(kSrqRules);
      v1::Session resp;
      return stub_->UpdateRules(ctx.get(), req, &resp);
    }
    if (method == "Train") return Train(token, id);
    if (method == "Forward") {
      v1::ForwardRequest req;
      req.set_session_id(id);
      *req.mutable_inputs() = batch.inputs();
      v1::ForwardResponse resp;
      return stub_->Forward(ctx.get(), req, &resp);
    }
    if (method == "GetQuantStats") {
      v1::GetQuantStatsRequest req;
      req.set_session_id(id);
      v1::QuantStats resp;
      return stub_->GetQuantStats(ctx.get(), req, &resp);
    }
    if (method == "Evaluate") {
      v1::EvaluateResponse resp;
      auto writer = stub_->Evaluate(ctx.get(), &resp);
      v1::EvaluateRequest req;
      req.set_session_id(id);
      *req.mutable_batch() = batch;
      writer->Write(req);
      writer->WritesDone();
      return writer->Finish();
    }
    if (method == "Calibrate") {
      auto stream = stub_->Calibrate(ctx.get());
      v1::CalibrateRequest req;
      req.set_session_id(id);
      *req.mutable_inputs() = batch.inputs();
      stream->Write(req);
      stream->WritesDone();
      v1::CalibrateResponse resp;
      while (stream->Read(&resp)) {
      }
      return stream->Finish();
    }
    if (method == "SaveCheckpoint") {
      v1::SaveCheckpointRequest req;
      req.set_session_id(id);
      v1::CheckpointInfo resp;
      return stub_->SaveCheckpoint(ctx.get(), req, &resp);
    }
    if (method == "DownloadCheckpoint") {
      std::string bytes;
      return Download(token, id, &bytes);
    }
    if (method == "UploadCheckpoint") return Upload(token, id, checkpoint_);
    if (method == "ImportWeights") return Import(token, id);
    if (method == "ExportQuantized") {
      v1::ExportRequest req;
      req.set_session_id(id);
      req.set_format("compressed-tensors");
      auto reader = stub_->ExportQuantized(ctx.get(), req);
      v1::CheckpointChunk chunk;
      while (reader->Read(&chunk)) {
      }
      return reader->Finish();
    }
    if (method == "AnalyzeSensitivity") {
      auto stream = stub_->AnalyzeSensitivity(ctx.get());
      v1::SensitivityRequest req;
      req.set_session_id(id);
      *req.mutable_options()->mutable_rules() = Json<v1::RuleSet>(kSrqRules);
      *req.mutable_batch() = batch;
      stream->Write(req);
      stream->WritesDone();
      v1::SensitivityResponse resp;
      while (stream->Read(&resp)) {
      }
      return stream->Finish();
    }
    if (method == "GetServerInfo") {
      v1::ServerInfo resp;
      return stub_->GetServerInfo(ctx.get(), {}, &resp);
    }
    ADD_FAILURE() << "unknown method " << method;
    return grpc::Status::CANCELLED;
  }

  Certificates certs_;
  std::string dir_;
  std::unique_ptr<server::RunningServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Trainer::Stub> stub_;
  std::string checkpoint_;  // a checkpoint of the toy model (UploadCheckpoint)
};

const std::vector<std::string>& AllMethods() {
  static const std::vector<std::string> kMethods = [] {
    std::vector<std::string> names;
    const auto* service = google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(
        v1::Trainer::service_full_name());
    for (int i = 0; i < service->method_count(); ++i) names.push_back(service->method(i)->name());
    return names;
  }();
  return kMethods;
}

TEST_F(ServerAuthTest, EveryRpcUnderEveryRole) {
  const std::set<std::string> kReads = {"GetSession",    "ListSessions",    "GetQuantStats",
                                        "Forward",       "Evaluate",        "DownloadCheckpoint",
                                        "GetServerInfo", "ExportQuantized", "AnalyzeSensitivity"};
  ASSERT_EQ(AllMethods().size(), 17u);  // a new RPC must be added to this test and access.cc
  ASSERT_TRUE(Create(kTrainerA, "seed").ok());
  ASSERT_TRUE(Download(kTrainerA, "seed", &checkpoint_).ok());
  struct RoleCase {
    const char* token;
    const char* prefix;  // how the role names team-a's sessions
    bool writes;
  };
  for (const RoleCase& role : {RoleCase{kReaderA, "", false}, RoleCase{kTrainerA, "", true},
                               RoleCase{kAdmin, "team-a/", true}}) {
    const std::string target = absl::StrCat("t", role.token);
    ASSERT_TRUE(Create(kTrainerA, target).ok());
    for (const std::string& method : AllMethods()) {
      SCOPED_TRACE(absl::StrCat(role.token, " ", method));
      std::string id = role.prefix + target;
      if (method == "CreateSession") id = absl::StrCat(role.prefix, "new", role.token);
      if (method == "ImportWeights") id = absl::StrCat(role.prefix, "imp", role.token);
      // An export needs the activation statistics (the upload before replaced them).
      if (method == "ExportQuantized") {
        ASSERT_TRUE(Invoke("Calibrate", kTrainerA, target).ok());
      }
      if (method == "DeleteSession") {
        ASSERT_TRUE(Create(kTrainerA, absl::StrCat("del", role.token)).ok());
        id = absl::StrCat(role.prefix, "del", role.token);
      }
      const grpc::Status s = Invoke(method, role.token, id);
      if (role.writes || kReads.count(method)) {
        EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
      } else {
        EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
        EXPECT_THAT(s.error_message(), HasSubstr("role reader"));
      }
    }
  }
  // The reader's refusals changed nothing: its target still exists, no "new" session appeared.
  EXPECT_THAT(List(kReaderA), ::testing::Not(::testing::Contains(HasSubstr("newtok-a-reader"))));
  EXPECT_THAT(List(kReaderA), ::testing::Contains("team-a:deltok-a-reader"));
}

TEST_F(ServerAuthTest, MissingOrBadCredentialsAreUnauthenticatedButHealthAnswers) {
  for (const std::string& method : AllMethods()) {
    SCOPED_TRACE(method);
    EXPECT_EQ(Invoke(method, "", "x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Invoke(method, "not-a-token", "x").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  auto ctx = Ctx("");
  ctx->AddMetadata("authorization", std::string("Basic ") + kTrainerA);  // not a bearer token
  v1::ListSessionsResponse list;
  const grpc::Status basic = stub_->ListSessions(ctx.get(), {}, &list);
  EXPECT_EQ(basic.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(basic.error_message(), HasSubstr("Bearer"));
  // Probes need no credentials.
  auto health = grpc::health::v1::Health::NewStub(channel_);
  for (const char* service : {"", "liveness", "readiness"}) {
    grpc::health::v1::HealthCheckRequest req;
    req.set_service(service);
    grpc::health::v1::HealthCheckResponse resp;
    auto hctx = Ctx("");
    const grpc::Status s = health->Check(hctx.get(), req, &resp);
    EXPECT_TRUE(s.ok()) << service << ": " << s.error_message();
    EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  }
  // The plaintext health port serves health and nothing else.
  auto plain = grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->health_port()),
                                   grpc::InsecureChannelCredentials());
  grpc::health::v1::HealthCheckRequest readiness;
  readiness.set_service("readiness");
  grpc::health::v1::HealthCheckResponse answer;
  EXPECT_TRUE(
      grpc::health::v1::Health::NewStub(plain)->Check(Ctx("").get(), readiness, &answer).ok());
  EXPECT_EQ(answer.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  v1::ListSessionsResponse none;
  EXPECT_EQ(v1::Trainer::NewStub(plain)->ListSessions(Ctx(kAdmin).get(), {}, &none).error_code(),
            grpc::StatusCode::UNIMPLEMENTED);
  for (const char* method : {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                             "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    // v1alpha's messages are v1's, field for field.
    using Request = grpc::reflection::v1::ServerReflectionRequest;
    using Response = grpc::reflection::v1::ServerReflectionResponse;
    auto rctx = Ctx("");
    const grpc::internal::RpcMethod rpc(method, grpc::internal::RpcMethod::BIDI_STREAMING, plain);
    std::unique_ptr<grpc::ClientReaderWriter<Request, Response>> stream(
        grpc::internal::ClientReaderWriterFactory<Request, Response>::Create(plain.get(), rpc,
                                                                             rctx.get()));
    Request req;
    req.set_list_services("");
    stream->Write(req);
    stream->WritesDone();
    Response resp;
    EXPECT_FALSE(stream->Read(&resp)) << method;
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNIMPLEMENTED) << method;
  }
  // The scheme is case-insensitive; an empty token is no token.
  auto upper = Ctx("");
  upper->AddMetadata("authorization", std::string("BEARER ") + kReaderA);
  EXPECT_TRUE(stub_->ListSessions(upper.get(), {}, &list).ok());
  auto empty = Ctx("");
  empty->AddMetadata("authorization", "Bearer ");
  EXPECT_EQ(stub_->ListSessions(empty.get(), {}, &list).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // Reflection is not public: it needs a valid caller like the Trainer service.
  auto reflection = grpc::reflection::v1::ServerReflection::NewStub(channel_);
  for (const std::string& token : {std::string(), std::string(kReaderA)}) {
    auto rctx = Ctx(token);
    auto stream = reflection->ServerReflectionInfo(rctx.get());
    grpc::reflection::v1::ServerReflectionRequest req;
    req.set_list_services("");
    stream->Write(req);
    stream->WritesDone();
    grpc::reflection::v1::ServerReflectionResponse resp;
    const bool answered = stream->Read(&resp);
    const grpc::Status s = stream->Finish();
    EXPECT_EQ(answered, !token.empty());
    EXPECT_EQ(s.ok(), !token.empty()) << s.error_message();
    if (token.empty()) {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    }
  }
}

TEST_F(ServerAuthTest, TenantsCannotSeeOrTouchEachOthersSessions) {
  ASSERT_TRUE(Create(kTrainerA, "x").ok());
  ASSERT_TRUE(Train(kTrainerA, "x", 3).ok());
  ASSERT_TRUE(Download(kTrainerA, "x", &checkpoint_).ok());
  EXPECT_THAT(List(kTrainerB), ::testing::IsEmpty());
  // Every call on A's session, by its plain name or its full name, is NOT_FOUND for B, with the
  // same message as a session that does not exist.
  for (const std::string& method : AllMethods()) {
    if (method == "CreateSession" || method == "ListSessions" || method == "GetServerInfo") {
      continue;
    }
    for (const std::string id : {"x", "team-a/x"}) {
      // An upload or import into B's own "x" would create that session in B's namespace.
      if ((method == "UploadCheckpoint" || method == "ImportWeights") && id == "x") continue;
      SCOPED_TRACE(method + " " + id);
      const grpc::Status s = Invoke(method, kTrainerB, id);
      EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
      EXPECT_THAT(s.error_message(), HasSubstr("does not exist"));
    }
  }
  // Nothing of A's changed: still at step 3, with the same checkpoint bytes.
  v1::GetSessionRequest get;
  get.set_session_id("x");
  v1::Session a;
  ASSERT_TRUE(stub_->GetSession(Ctx(kTrainerA).get(), get, &a).ok());
  EXPECT_EQ(a.step(), 3);
  std::string again;
  ASSERT_TRUE(Download(kTrainerA, "x", &again).ok());
  EXPECT_EQ(again, checkpoint_);
  // B's own "x" is a different session; an admin sees both, by tenant.
  ASSERT_TRUE(Create(kTrainerB, "x").ok());
  v1::Session b;
  ASSERT_TRUE(stub_->GetSession(Ctx(kTrainerB).get(), get, &b).ok());
  EXPECT_EQ(b.step(), 0);
  EXPECT_EQ(List(kTrainerB), std::vector<std::string>{"team-b:x"});
  EXPECT_THAT(List(kAdmin), ::testing::UnorderedElementsAre("team-a:team-a/x", "team-b:team-b/x"));
  // Metrics carry the tenant, never a token.
  const std::string metrics = server_->metrics().Serialize();
  EXPECT_THAT(metrics, HasSubstr(R"(qtrain_tenant_sessions{tenant="team-a"} 1)"));
  EXPECT_THAT(metrics, HasSubstr(R"(qtrain_loss{session="team-a/x",tenant="team-a"})"));
  EXPECT_THAT(metrics, ::testing::Not(HasSubstr("tok-")));
  // The data dir keeps tenants apart, and a restart keeps ownership.
  Restart();
  EXPECT_EQ(List(kTrainerA), std::vector<std::string>{"team-a:x"});
  EXPECT_EQ(List(kTrainerB), std::vector<std::string>{"team-b:x"});
  ASSERT_TRUE(stub_->GetSession(Ctx(kTrainerA).get(), get, &a).ok());
  EXPECT_EQ(a.step(), 3);
  EXPECT_TRUE(std::ifstream(dir_ + "/data/tenants/team-a/x.safetensors").good());
  EXPECT_TRUE(std::ifstream(dir_ + "/data/tenants/team-b/x.safetensors").good());
  EXPECT_EQ(Invoke("GetSession", kTrainerB, "team-a/x").error_code(), grpc::StatusCode::NOT_FOUND);
  // Malformed ids cannot reach outside a tenant's directory.
  for (const std::string id : {"../x", "team-a/../x", "a/b/c", "."}) {
    EXPECT_EQ(Create(kTrainerB, id).error_code(), grpc::StatusCode::INVALID_ARGUMENT) << id;
  }
}

TEST_F(ServerAuthTest, QuotasNameTheLimitAndTheUse) {
  ASSERT_TRUE(Create(kTrainerB, "b1").ok());
  ASSERT_TRUE(Create(kTrainerB, "b2").ok());
  const auto wait_reload = [] { std::this_thread::sleep_for(std::chrono::milliseconds(1200)); };
  // Parameters: two toy models have 646; a third would pass 700.
  WriteAccess(R"({"team-b": {"max_parameters": 700}})");
  wait_reload();
  grpc::Status s = Create(kTrainerB, "b3");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("tenant \"team-b\" uses 646 parameters"));
  EXPECT_THAT(s.error_message(), HasSubstr("max_parameters"));
  EXPECT_TRUE(Create(kTrainerA, "a3").ok());  // another tenant is not affected
  // Sessions.
  WriteAccess(R"({"team-b": {"max_sessions": 2}})");
  wait_reload();
  s = Create(kTrainerB, "b3");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("uses 2 sessions"));
  // Concurrent streams: a second stream is refused while the first is open.
  WriteAccess(R"({"team-b": {"max_streams": 1}})");
  wait_reload();
  OpenStream open = OpenTrain(kTrainerB, "b1");  // the stream holds its slot now
  auto& first = open.stream;
  s = Train(kTrainerB, "b2");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("streams"));
  first->WritesDone();
  EXPECT_TRUE(first->Finish().ok());
  EXPECT_TRUE(Train(kTrainerB, "b2").ok());  // the slot is free again
  // Checkpoint bytes on disk: b1's and b2's checkpoints do not both fit 1.5 checkpoints.
  std::string bytes;
  ASSERT_TRUE(Download(kTrainerB, "b1", &bytes).ok());
  WriteAccess(absl::StrCat(R"({"team-b": {"max_checkpoint_bytes": )", bytes.size() * 3 / 2, "}}"));
  wait_reload();
  s = Invoke("SaveCheckpoint", kTrainerB, "b1");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("max_checkpoint_bytes"));
  ASSERT_TRUE(Invoke("DeleteSession", kTrainerB, "b2").ok());
  EXPECT_TRUE(Invoke("SaveCheckpoint", kTrainerB, "b1").ok());
}

TEST_F(ServerAuthTest, EvaluateThatUpdatesStatsNeedsTheCalibrateRole) {
  ASSERT_TRUE(Create(kTrainerA, "ev").ok());
  auto evaluate = [&](const std::string& token, bool update_stats) {
    auto ctx = Ctx(token);
    v1::EvaluateResponse resp;
    auto writer = stub_->Evaluate(ctx.get(), &resp);
    v1::EvaluateRequest req;
    req.set_session_id("ev");
    *req.mutable_batch() = MakeBatch(0);
    req.set_update_stats(update_stats);
    writer->Write(req);
    writer->WritesDone();
    return writer->Finish();
  };
  EXPECT_TRUE(evaluate(kReaderA, false).ok());
  const grpc::Status refused = evaluate(kReaderA, true);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(refused.error_message(), HasSubstr("Calibrate"));
  v1::GetQuantStatsRequest get;
  get.set_session_id("ev");
  v1::QuantStats stats;
  ASSERT_TRUE(stub_->GetQuantStats(Ctx(kReaderA).get(), get, &stats).ok());
  for (const auto& stat : stats.stats()) EXPECT_EQ(stat.count(), 0) << stat.DebugString();
  EXPECT_TRUE(evaluate(kTrainerA, true).ok());
  std::ifstream in(dir_ + "/audit.log");
  std::string audit((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(audit, HasSubstr(R"("role":"reader","peer")"));
  EXPECT_THAT(audit, HasSubstr(R"("method":"Evaluate","session":"ev","code":"PERMISSION_DENIED")"));
  EXPECT_THAT(audit, HasSubstr(R"("method":"Evaluate","session":"ev","code":"OK")"));
}

TEST_F(ServerAuthTest, SessionsFromBeforeAuthenticationAreForAdminsOnly) {
  server_->Shutdown();
  server_.reset();
  {
    server::ServerOptions o;  // the same data dir, served without authentication
    o.listen = "127.0.0.1:0";
    o.data_dir = dir_ + "/data";
    auto plain = server::RunningServer::Start(o);
    ASSERT_TRUE(plain.ok()) << plain.status();
    stub_ = v1::Trainer::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*plain)->port()),
                                                     grpc::InsecureChannelCredentials()));
    ASSERT_TRUE(Create("", "legacy").ok());
    (*plain)->Shutdown();
  }
  Start();
  EXPECT_EQ(List(kAdmin), std::vector<std::string>{"/legacy"});
  EXPECT_EQ(List(kTrainerA), std::vector<std::string>{});
  EXPECT_TRUE(Invoke("GetSession", kAdmin, "/legacy").ok());
  EXPECT_EQ(Invoke("GetSession", kTrainerA, "/legacy").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Invoke("GetSession", kAdmin, "legacy").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(Invoke("DeleteSession", kAdmin, "/legacy").ok());
}

TEST_F(ServerAuthTest, TokensRotateWithoutARestart) {
  EXPECT_EQ(Invoke("ListSessions", "tok-new", "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  WriteAccess("", "," + Token("tok-new", "team-c", "trainer"));
  grpc::Status s(grpc::StatusCode::UNKNOWN, "not called yet");
  for (int i = 0; i < 30 && !s.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s = Invoke("ListSessions", "tok-new", "");
  }
  EXPECT_TRUE(s.ok()) << s.error_message();
  // A broken file is refused and the tokens in force stay.
  std::ofstream(dir_ + "/access.json") << "{\"tokens\": [{\"sha256\": \"zz\"}]}";
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  s = Invoke("ListSessions", "tok-new", "");
  EXPECT_TRUE(s.ok()) << s.error_code() << " " << s.error_message();
  WriteAccess("");  // revoked
  for (int i = 0; i < 30 && s.ok(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    s = Invoke("ListSessions", "tok-new", "");
  }
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(ServerAuthTest, AuditLogRecordsMutatingAndRefusedCallsWithoutSecrets) {
  ASSERT_TRUE(Create(kTrainerA, "audited").ok());
  ASSERT_TRUE(Train(kTrainerA, "audited", 2).ok());
  ASSERT_EQ(Invoke("GetSession", kTrainerA, "audited").error_code(), grpc::StatusCode::OK);
  ASSERT_EQ(Invoke("DeleteSession", kReaderA, "audited").error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  ASSERT_EQ(Invoke("DeleteSession", kTrainerB, "audited").error_code(),
            grpc::StatusCode::NOT_FOUND);
  std::ifstream in(dir_ + "/audit.log");
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) {
    EXPECT_THAT(line, ::testing::Not(HasSubstr("tok-")));  // never a token
    lines.push_back(nlohmann::json::parse(line));
  }
  ASSERT_EQ(lines.size(), 4u);  // reads are not audited
  auto expect = [&](const nlohmann::json& l, const char* tenant, const char* role,
                    const char* method, const char* code) {
    EXPECT_EQ(l["tenant"], tenant);
    EXPECT_EQ(l["role"], role);
    EXPECT_EQ(l["method"], method);
    EXPECT_EQ(l["session"], "audited");
    EXPECT_EQ(l["code"], code);
    EXPECT_THAT(l["peer"].get<std::string>(), HasSubstr("127.0.0.1"));
    EXPECT_EQ(l["ts"].get<std::string>().size(), 24u);
  };
  expect(lines[0], "team-a", "trainer", "CreateSession", "OK");
  expect(lines[1], "team-a", "trainer", "Train", "OK");
  expect(lines[2], "team-a", "reader", "DeleteSession", "PERMISSION_DENIED");
  expect(lines[3], "team-b", "trainer", "DeleteSession", "NOT_FOUND");
}

// Issue 20: an upload that cannot be made durable (the disk quota) leaves the session as it was,
// in memory and on disk.
TEST_F(ServerAuthTest, ARefusedUploadChangesNothing) {
  ASSERT_TRUE(Create(kTrainerB, "up").ok());
  std::string step0;
  ASSERT_TRUE(Download(kTrainerB, "up", &step0).ok());
  ASSERT_TRUE(Train(kTrainerB, "up", 3).ok());
  ASSERT_TRUE(Invoke("SaveCheckpoint", kTrainerB, "up").ok());
  std::string before;
  ASSERT_TRUE(Download(kTrainerB, "up", &before).ok());
  const std::string file = dir_ + "/data/tenants/team-b/up.safetensors";
  std::ifstream in(file, std::ios::binary);
  const std::string on_disk((std::istreambuf_iterator<char>(in)), {});
  WriteAccess(absl::StrCat(R"({"team-b": {"max_checkpoint_bytes": )", step0.size() / 2, "}}"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  const grpc::Status s = Upload(kTrainerB, "up", step0);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("so it was not loaded"));
  std::string after;
  ASSERT_TRUE(Download(kTrainerB, "up", &after).ok());
  EXPECT_EQ(after, before);  // the weights, slots, stats and step of step 3
  std::ifstream again(file, std::ios::binary);
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(again)), {}), on_disk);
}

// A stream opened with a token that is then revoked ends at its next message.
TEST_F(ServerAuthTest, ARevokedTokenEndsItsOpenStreams) {
  WriteAccess("", "," + Token("tok-temp", "team-b", "trainer"));
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  ASSERT_TRUE(Create("tok-temp", "rv").ok());
  OpenStream open = OpenTrain("tok-temp", "rv");
  auto& stream = open.stream;
  WriteAccess("");  // revoked
  v1::TrainRequest req;
  v1::TrainResponse resp;
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  int steps_after = 0;
  for (int i = 1; i < 50; ++i) {
    *req.mutable_batch() = MakeBatch(i);
    if (!stream->Write(req) || !stream->Read(&resp)) break;
    ++steps_after;
  }
  const grpc::Status s = stream->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("no longer valid"));
  EXPECT_LE(steps_after, 1);  // a step already queued may answer; none after
  v1::GetSessionRequest get;
  get.set_session_id("rv");
  v1::Session session;
  ASSERT_TRUE(stub_->GetSession(Ctx(kTrainerB).get(), get, &session).ok());
  EXPECT_LE(session.step(), 2);
}

// Two authorization headers are refused, on the Trainer and on reflection alike.
TEST_F(ServerAuthTest, TwoAuthorizationHeadersAreRefused) {
  grpc::ClientContext ctx;
  ctx.AddMetadata("authorization", std::string("Bearer ") + kTrainerA);
  ctx.AddMetadata("authorization", std::string("Bearer ") + kAdmin);
  v1::ListSessionsResponse resp;
  grpc::Status s = stub_->ListSessions(&ctx, {}, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(s.error_message(), HasSubstr("more than one authorization header"));
  auto reflection = grpc::reflection::v1::ServerReflection::NewStub(channel_);
  grpc::ClientContext rctx;
  rctx.AddMetadata("authorization", std::string("Bearer ") + kAdmin);
  rctx.AddMetadata("authorization", std::string("Bearer ") + kTrainerA);
  auto stream = reflection->ServerReflectionInfo(&rctx);
  grpc::reflection::v1::ServerReflectionRequest list;
  list.set_list_services("");
  stream->Write(list);
  stream->WritesDone();
  grpc::reflection::v1::ServerReflectionResponse answer;
  EXPECT_FALSE(stream->Read(&answer));
  EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

// What a caller sends cannot grow the audit log by its size; SaveCheckpoint names the file
// relative to the tenant's directory, not the server's path.
TEST_F(ServerAuthTest, AuditLinesAreBoundedAndSavedPathsRelative) {
  const std::string huge(1 << 20, 'x');
  EXPECT_EQ(Invoke("DeleteSession", "", huge).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Invoke("DeleteSession", kTrainerA, huge).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  std::ifstream in(dir_ + "/audit.log");
  int lines = 0;
  for (std::string line; std::getline(in, line); ++lines) {
    EXPECT_LT(line.size(), 3000u);
    EXPECT_THAT(line, HasSubstr("(1048576 bytes)"));
  }
  EXPECT_EQ(lines, 2);
  ASSERT_TRUE(Create(kTrainerA, "where").ok());
  v1::SaveCheckpointRequest save;
  save.set_session_id("where");
  v1::CheckpointInfo info;
  ASSERT_TRUE(stub_->SaveCheckpoint(Ctx(kTrainerA).get(), save, &info).ok());
  EXPECT_EQ(info.path(), "where.safetensors");
  save.set_session_id("team-a/where");
  ASSERT_TRUE(stub_->SaveCheckpoint(Ctx(kAdmin).get(), save, &info).ok());
  EXPECT_EQ(info.path(), "tenants/team-a/where.safetensors");
}

// Creations run concurrently now: the last free session slot still goes to one of them only.
TEST_F(ServerAuthTest, ConcurrentCreatesCannotShareTheLastSlot) {
  ASSERT_TRUE(Create(kTrainerB, "c0").ok());
  WriteAccess(R"({"team-b": {"max_sessions": 2}})");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  std::vector<grpc::Status> results(6);
  std::vector<std::thread> callers;
  for (size_t i = 0; i < results.size(); ++i) {
    callers.emplace_back([&, i] { results[i] = Create(kTrainerB, absl::StrCat("c", i + 1)); });
  }
  for (std::thread& t : callers) t.join();
  int created = 0;
  for (const grpc::Status& s : results) {
    if (s.ok()) {
      ++created;
    } else {
      EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
    }
  }
  EXPECT_EQ(created, 1);
  EXPECT_EQ(List(kTrainerB).size(), 2u);
}

// Downloads count as streams: the tenant's max_streams holds them too.
TEST_F(ServerAuthTest, DownloadsHoldAStreamSlot) {
  ASSERT_TRUE(Create(kTrainerB, "dl").ok());
  WriteAccess(R"({"team-b": {"max_streams": 1}})");
  std::this_thread::sleep_for(std::chrono::milliseconds(1200));
  OpenStream open = OpenTrain(kTrainerB, "dl");  // the stream holds the tenant's only slot
  auto& first = open.stream;
  std::string bytes;
  const grpc::Status s = Download(kTrainerB, "dl", &bytes);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(s.error_message(), HasSubstr("streams"));
  first->WritesDone();
  EXPECT_TRUE(first->Finish().ok());
  bytes.clear();
  EXPECT_TRUE(Download(kTrainerB, "dl", &bytes).ok());  // the slot is free again
  bytes.clear();
  EXPECT_TRUE(Download(kTrainerB, "dl", &bytes).ok());  // and a download gives it back
}

TEST(ServerSafeDefaultsTest, RefusesAnOpenNetworkListenWithoutAuthentication) {
  server::ServerOptions o;
  o.listen = "0.0.0.0:0";
  auto s = server::RunningServer::Start(o);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("--allow_insecure"));
  o.listen = "127.example.com:0";  // a name, not the loopback network
  EXPECT_EQ(server::RunningServer::Start(o).status().code(), absl::StatusCode::kFailedPrecondition);
  o.listen = "0.0.0.0:0";
  o.allow_insecure = true;
  s = server::RunningServer::Start(o);
  EXPECT_TRUE(s.ok()) << s.status();
  if (s.ok()) (*s)->Shutdown();
  // Tokens never travel in plaintext; a broken access file names the field.
  char dir[] = "/tmp/qtrain_auth_XXXXXX";
  const std::string d = mkdtemp(dir);
  std::ofstream(d + "/access.json")
      << R"({"tokens": [{"sha256": "ab", "tenant": "t", "role": "x"}]})";
  server::ServerOptions p;
  p.listen = "127.0.0.1:0";
  p.auth_tokens = d + "/access.json";
  s = server::RunningServer::Start(p);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("tokens[0].sha256"));
  std::ofstream(d + "/access.json") << R"({"tokens": []})";
  s = server::RunningServer::Start(p);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("TLS"));
  (void)std::system(("rm -rf " + d).c_str());
}

class ServerCertIdentityTest : public ServerAuthTest {
 protected:
  void SetUp() override {
    char dir[] = "/tmp/qtrain_auth_XXXXXX";
    dir_ = mkdtemp(dir);
    WriteAccess("");
  }
  // Mutual TLS where the certificate's CN names the tenant (tokens still work and win).
  void StartWithCert(const std::string& client) {
    server::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.tls_cert = certs_.Path("server.pem");
    o.tls_key = certs_.Path("server.key");
    o.tls_client_ca = certs_.Path("ca.pem");
    o.tls_client_identity = true;
    o.tls_client_role = "trainer";
    o.auth_tokens = dir_ + "/access.json";
    o.audit_log = "none";
    auto s = server::RunningServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    channel_ = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                         certs_.Client(client), args);
    stub_ = v1::Trainer::NewStub(channel_);
  }
};

TEST_F(ServerCertIdentityTest, TheClientCertificateNamesTheTenant) {
  StartWithCert("team-a");
  ASSERT_TRUE(Create("", "by-cert").ok());
  EXPECT_EQ(List(""), std::vector<std::string>{"team-a:by-cert"});
  EXPECT_EQ(List(kTrainerB), std::vector<std::string>{});  // a token wins over the certificate
  EXPECT_EQ(Invoke("GetSession", kTrainerB, "team-a/by-cert").error_code(),
            grpc::StatusCode::NOT_FOUND);
  server_->Shutdown();
  StartWithCert("team-b");
  EXPECT_EQ(Invoke("GetSession", "", "by-cert").error_code(), grpc::StatusCode::NOT_FOUND);
  for (const char* refused : {"", "expired", "stranger"}) {  // none, expired, another CA
    server_->Shutdown();
    StartWithCert(refused);
    EXPECT_EQ(Invoke("ListSessions", "", "").error_code(), grpc::StatusCode::UNAVAILABLE)
        << refused;
  }
}

}  // namespace
}  // namespace qtrain
