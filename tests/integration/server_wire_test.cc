// The server as a client that has only bytes sees it. Bytes that are not the message a method
// expects, sent through raw (ByteBuffer) calls as any client generated from other .proto files
// could: every method answers INVALID_ARGUMENT naming the message type (gRPC alone answers
// UNIMPLEMENTED for a unary call, and ends a client stream as if it had half-closed, so a
// garbage message in the middle of a Train stream "succeeded"). And reflection, which such
// clients (grpcurl, buf curl) start from.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/impl/codegen/client_unary_call.h>
#include <grpcpp/impl/codegen/sync_stream.h>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/descriptor_database.h>

#include <map>
#include <random>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "grpc/reflection/v1/reflection.pb.h"
#include "server/rpc/wire_message.h"
#include "tests/integration/server_fixture.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;
using Bytes = grpc::ByteBuffer;

Bytes Garbage() {
  grpc::Slice slice(std::string("\xff\xff\xff\xff", 4));  // a truncated varint tag
  return Bytes(&slice, 1);
}

template <typename M>
Bytes Wire(const M& m) {
  Bytes b;
  EXPECT_TRUE(rpc::SerializeWire(m, &b).ok());
  return b;
}

grpc::internal::RpcMethod Method(const char* name, grpc::internal::RpcMethod::RpcType type) {
  return grpc::internal::RpcMethod(name, type);
}

class ServerWireTest : public ServerTest {
 protected:
  // A client stream of `messages` (then half-close); the call's status.
  grpc::Status RawClientStream(const char* method, const std::vector<Bytes>& messages) {
    grpc::ClientContext ctx;
    Bytes answer;
    std::unique_ptr<grpc::ClientWriter<Bytes>> writer(
        grpc::internal::ClientWriterFactory<Bytes>::Create(
            channel_.get(), Method(method, grpc::internal::RpcMethod::CLIENT_STREAMING), &ctx,
            &answer));
    for (const Bytes& m : messages) writer->Write(m);
    writer->WritesDone();
    return writer->Finish();
  }

  // A bidi stream: writes `messages`, half-closes, reads every response; (responses, status).
  std::pair<int, grpc::Status> RawBidiStream(const char* method,
                                             const std::vector<Bytes>& messages) {
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<Bytes, Bytes>> stream(
        grpc::internal::ClientReaderWriterFactory<Bytes, Bytes>::Create(
            channel_.get(), Method(method, grpc::internal::RpcMethod::BIDI_STREAMING), &ctx));
    for (const Bytes& m : messages) stream->Write(m);
    stream->WritesDone();
    Bytes response;
    int responses = 0;
    while (stream->Read(&response)) ++responses;
    return {responses, stream->Finish()};
  }

  grpc::Status RawUnary(const char* method, const Bytes& request) {
    grpc::ClientContext ctx;
    Bytes response;
    return grpc::internal::BlockingUnaryCall<Bytes, Bytes>(
        channel_.get(), Method(method, grpc::internal::RpcMethod::NORMAL_RPC), &ctx, request,
        &response);
  }
};

TEST_F(ServerWireTest, UnparseableUnaryRequestsAreInvalidArgument) {
  for (const char* method : {"/qtrain.v1.Trainer/CreateSession", "/qtrain.v1.Trainer/GetSession",
                             "/qtrain.v1.Trainer/Forward", "/qtrain.v1.Trainer/SaveCheckpoint",
                             "/qtrain.v1.Trainer/GetServerInfo"}) {
    const grpc::Status s = RawUnary(method, Garbage());
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << method;
    EXPECT_THAT(s.error_message(), HasSubstr("the request (4 bytes) is not a valid qtrain.v1."))
        << method;
  }
  // Unknown methods are UNIMPLEMENTED, and a client inventing method names cannot grow the
  // metrics' label sets without bound.
  for (int i = 0; i < 3; ++i) {
    const std::string method = absl::StrCat("/made.up.Service/Method", i);
    EXPECT_EQ(RawUnary(method.c_str(), Garbage()).error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  const std::string scrape = server_->metrics().Serialize();
  EXPECT_THAT(scrape, ::testing::Not(HasSubstr("made.up")));
  EXPECT_THAT(scrape, HasSubstr("grpc_server_handled_total{grpc_code=\"UNIMPLEMENTED\","
                                "grpc_method=\"unknown\",grpc_service=\"unknown\","
                                "grpc_type=\"unknown\"} 3"));
  // The same bytes framed correctly still work (the raw path is the real path).
  v1::GetServerInfoRequest info;
  EXPECT_TRUE(RawUnary("/qtrain.v1.Trainer/GetServerInfo", Wire(info)).ok());
}

TEST_F(ServerWireTest, AGarbageMessageEndsATrainStreamWithInvalidArgument) {
  Create("s");
  v1::TrainRequest first;
  first.set_session_id("s");
  *first.mutable_batch() = MakeBatch(0);
  v1::TrainRequest more;
  *more.mutable_batch() = MakeBatch(1);
  const auto [responses, s] = RawBidiStream(
      "/qtrain.v1.Trainer/Train", {Wire(first), Garbage(), Wire(more), Wire(more), Wire(more)});
  ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("message 2 of the Train stream (4 bytes) is not a valid "
                                           "qtrain.v1.TrainRequest"));
  EXPECT_LE(responses, 1);
  // Nothing after the garbage ran: the session is at step 0 or 1, and still trains.
  const auto [results, status] = Train("s", 2);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_LE(results.back().step(), 3);
}

TEST_F(ServerWireTest, GarbageInEvaluateAndUploadIsInvalidArgumentAndChangesNothing) {
  Create("e");
  grpc::Status s = RawClientStream("/qtrain.v1.Trainer/Evaluate", {Garbage()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("qtrain.v1.EvaluateRequest"));
  v1::CheckpointChunk chunk;
  chunk.set_session_id("new");
  chunk.set_data("safetensors?");
  s = RawClientStream("/qtrain.v1.Trainer/UploadCheckpoint", {Wire(chunk), Garbage()});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("upload message 2"));
  grpc::ClientContext ctx;
  v1::ListSessionsResponse list;
  ASSERT_TRUE(stub_->ListSessions(&ctx, v1::ListSessionsRequest(), &list).ok());
  ASSERT_EQ(list.sessions_size(), 1);  // no session "new"
  EXPECT_EQ(list.sessions(0).step(), 0);
}

// Issue 10: reflection served only v1alpha and could not describe grpc.health.v1.Health, so
// `buf curl --list-methods` failed. Both versions (wire-identical) now describe every service.
TEST_F(ServerWireTest, ReflectionV1AndV1alphaDescribeEveryService) {
  namespace refl = grpc::reflection::v1;
  for (const char* method : {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                             "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"}) {
    SCOPED_TRACE(method);
    grpc::ClientContext ctx;
    std::unique_ptr<grpc::ClientReaderWriter<Bytes, Bytes>> stream(
        grpc::internal::ClientReaderWriterFactory<Bytes, Bytes>::Create(
            channel_.get(), Method(method, grpc::internal::RpcMethod::BIDI_STREAMING), &ctx));
    auto ask = [&](const refl::ServerReflectionRequest& request) {
      refl::ServerReflectionResponse response;
      Bytes bytes;
      EXPECT_TRUE(stream->Write(Wire(request)));
      EXPECT_TRUE(stream->Read(&bytes));
      EXPECT_TRUE(rpc::ParseWire(bytes, &response, "response").ok());
      return response;
    };
    refl::ServerReflectionRequest list;
    list.set_list_services("");
    std::vector<std::string> services;
    const refl::ServerReflectionResponse listed = ask(list);
    for (const auto& s : listed.list_services_response().service()) services.push_back(s.name());
    EXPECT_THAT(services, ::testing::IsSupersetOf({"qtrain.v1.Trainer", "grpc.health.v1.Health"}));
    for (const std::string& service : services) {
      refl::ServerReflectionRequest symbol;
      symbol.set_file_containing_symbol(service);
      const refl::ServerReflectionResponse r = ask(symbol);
      ASSERT_FALSE(r.has_error_response()) << service << ": " << r.error_response().error_message();
      google::protobuf::SimpleDescriptorDatabase db;
      for (const std::string& bytes : r.file_descriptor_response().file_descriptor_proto()) {
        google::protobuf::FileDescriptorProto file;
        ASSERT_TRUE(file.ParseFromString(bytes));
        db.Add(file);
      }
      google::protobuf::DescriptorPool pool(&db);
      const google::protobuf::ServiceDescriptor* d = pool.FindServiceByName(service);
      ASSERT_NE(d, nullptr) << service << " cannot be built from its answer alone";
      EXPECT_GT(d->method_count(), 0) << service;
    }
    refl::ServerReflectionRequest unknown;
    unknown.set_file_containing_symbol("no.such.Service");
    EXPECT_EQ(ask(unknown).error_response().error_code(), grpc::StatusCode::NOT_FOUND);
    stream->WritesDone();
    EXPECT_TRUE(stream->Finish().ok());
  }
}

// A gRPC-level fuzz replay: valid requests of every kind, mutated (bits flipped, bytes cut,
// inserted or overwritten), sent at the real server as raw bytes. Every call must end with a
// canonical code the API documents (never UNKNOWN, INTERNAL or UNIMPLEMENTED), and afterwards the
// server still answers and the session it started with still trains. Deterministic (fixed
// seed); under ASan in `make asan`.
TEST_F(ServerWireTest, MutatedRequestsAreAnsweredAndChangeNothingElse) {
  Create("keep");
  v1::CreateSessionRequest create;
  create.set_session_id("m");
  *create.mutable_model() = Json<v1::ModelSpec>(kSpec);
  *create.mutable_rules() = Json<v1::RuleSet>(
      R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "tile_size": 2}]})");
  v1::UpdateRulesRequest rules;
  rules.set_session_id("keep");
  *rules.mutable_rules() = create.rules();
  v1::ForwardRequest forward;
  forward.set_session_id("keep");
  *forward.mutable_inputs() = MakeBatch(1, 4).inputs();
  v1::TrainRequest train;
  train.set_session_id("keep");
  *train.mutable_batch() = MakeBatch(2, 4);
  v1::EvaluateRequest evaluate;
  evaluate.set_session_id("keep");
  *evaluate.mutable_batch() = MakeBatch(3, 4);
  const std::vector<std::pair<const char*, std::string>> unary = {
      {"/qtrain.v1.Trainer/CreateSession", create.SerializeAsString()},
      {"/qtrain.v1.Trainer/UpdateRules", rules.SerializeAsString()},
      {"/qtrain.v1.Trainer/Forward", forward.SerializeAsString()},
  };
  const std::string train_bytes = train.SerializeAsString();
  const std::string evaluate_bytes = evaluate.SerializeAsString();

  std::mt19937 rng(12345);
  auto mutate = [&](std::string b) {
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !b.empty(); ++e) {
      const size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0:
          b[at] = static_cast<char>(b[at] ^ (1 << (rng() % 8)));
          break;
        case 1:
          b.resize(at);
          break;
        case 2:
          b.insert(at, 1, static_cast<char>(rng()));
          break;
        default:
          b[at] = static_cast<char>(rng());
      }
    }
    return b;
  };
  auto bytes = [](const std::string& s) {
    grpc::Slice slice(s);
    return Bytes(&slice, 1);
  };
  const std::set<grpc::StatusCode> documented = {
      grpc::StatusCode::OK,
      grpc::StatusCode::INVALID_ARGUMENT,
      grpc::StatusCode::NOT_FOUND,
      grpc::StatusCode::ALREADY_EXISTS,
      grpc::StatusCode::FAILED_PRECONDITION,
      grpc::StatusCode::RESOURCE_EXHAUSTED,
  };
  std::map<grpc::StatusCode, int> seen;
  for (int i = 0; i < 3000; ++i) {
    grpc::Status s;
    switch (i % 5) {
      case 0:
      case 1:
      case 2: {
        const auto& [method, valid] = unary[i % 3];
        s = RawUnary(method, bytes(mutate(valid)));
        if (i % 3 == 0 && s.ok()) {  // a mutated CreateSession made a session: remove it
          grpc::ClientContext ctx;
          v1::ListSessionsResponse list;
          ASSERT_TRUE(stub_->ListSessions(&ctx, v1::ListSessionsRequest(), &list).ok());
          for (const v1::Session& x : list.sessions()) {
            if (x.session_id() == "keep") continue;
            v1::DeleteSessionRequest del;
            del.set_session_id(x.session_id());
            grpc::ClientContext dctx;
            v1::DeleteSessionResponse r;
            ASSERT_TRUE(stub_->DeleteSession(&dctx, del, &r).ok());
          }
        }
        break;
      }
      case 3:
        s = RawBidiStream("/qtrain.v1.Trainer/Train",
                          {bytes(train_bytes), bytes(mutate(train_bytes))})
                .second;
        break;
      default:
        s = RawClientStream("/qtrain.v1.Trainer/Evaluate", {bytes(mutate(evaluate_bytes))});
    }
    ++seen[s.error_code()];
    ASSERT_TRUE(documented.count(s.error_code()))
        << "call " << i << ": " << s.error_code() << " " << s.error_message();
  }
  EXPECT_GT(seen[grpc::StatusCode::INVALID_ARGUMENT], 1000);
  EXPECT_GT(seen[grpc::StatusCode::OK], 50);  // mutations that stay valid still work
  // The server answers, and the session it started with still trains.
  const auto [results, status] = Train("keep", 2);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(results.back().step(), 0);
}

}  // namespace
}  // namespace qtrain
