#include "server/server_main.h"

#include <chrono>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"

namespace qtrain::server {

absl::StatusOr<std::unique_ptr<RunningServer>> RunningServer::Start(const ServerOptions& o) {
  auto s = std::unique_ptr<RunningServer>(new RunningServer());
  s->sessions_ = std::make_unique<engine::SessionManager>(o.sessions);
  s->service_ = std::make_unique<rpc::TrainerService>(s->sessions_.get(), o.limits);
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(o.listen, grpc::InsecureServerCredentials(), &s->port_);
  builder.RegisterService(s->service_.get());
  // Batches arrive as raw bytes; the server's own limit (max_batch_bytes) is the one that
  // matters, so gRPC's message limit is set above it.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(2 * o.limits.max_batch_bytes + (1 << 20), INT32_MAX)));
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", o.listen));
  }
  return s;
}

RunningServer::~RunningServer() { Shutdown(); }

void RunningServer::Shutdown(int deadline_ms) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(deadline_ms));
  sessions_->ShutdownAll();
}

}  // namespace qtrain::server
