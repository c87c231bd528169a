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
  // The same bytes framed correctly still work (the raw path is the real path).
  v1::GetServerInfoRequest info;
  EXPECT_TRUE(RawUnary("/qtrain.v1.Trainer/GetServerInfo", Wire(info)).ok());
}

TEST_F(ServerWireTest, AGarbageMessageEndsATrainStreamWithInvalidArgument) {
  Create("s");
  grpc::ClientContext ctx;
  std::unique_ptr<grpc::ClientReaderWriter<Bytes, Bytes>> stream(
      grpc::internal::ClientReaderWriterFactory<Bytes, Bytes>::Create(
          channel_.get(),
          Method("/qtrain.v1.Trainer/Train", grpc::internal::RpcMethod::BIDI_STREAMING), &ctx));
  v1::TrainRequest first;
  first.set_session_id("s");
  *first.mutable_batch() = MakeBatch(0);
  ASSERT_TRUE(stream->Write(Wire(first)));
  stream->Write(Garbage());
  v1::TrainRequest more;
  *more.mutable_batch() = MakeBatch(1);
  for (int i = 0; i < 3; ++i) stream->Write(Wire(more));
  stream->WritesDone();
  Bytes response;
  int responses = 0;
  while (stream->Read(&response)) ++responses;
  const grpc::Status s = stream->Finish();
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
  {
    grpc::ClientContext ctx;
    Bytes answer;
    std::unique_ptr<grpc::ClientWriter<Bytes>> writer(
        grpc::internal::ClientWriterFactory<Bytes>::Create(
            channel_.get(),
            Method("/qtrain.v1.Trainer/Evaluate", grpc::internal::RpcMethod::CLIENT_STREAMING),
            &ctx, &answer));
    writer->Write(Garbage());
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("qtrain.v1.EvaluateRequest"));
  }
  {
    grpc::ClientContext ctx;
    Bytes answer;
    std::unique_ptr<grpc::ClientWriter<Bytes>> writer(
        grpc::internal::ClientWriterFactory<Bytes>::Create(
            channel_.get(),
            Method("/qtrain.v1.Trainer/UploadCheckpoint",
                   grpc::internal::RpcMethod::CLIENT_STREAMING),
            &ctx, &answer));
    v1::CheckpointChunk chunk;
    chunk.set_session_id("new");
    chunk.set_data("safetensors?");
    writer->Write(Wire(chunk));
    writer->Write(Garbage());
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr("upload message 2"));
  }
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

}  // namespace
}  // namespace qtrain
