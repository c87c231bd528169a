// Assembly of a qtrain server from its options: the session manager, the Trainer service,
// health checking and reflection, listening on an address ("127.0.0.1:0" picks a free port).
// Used by qtrain-server's main and by the integration tests, which run the real server
// in-process.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "server/engine/session.h"
#include "server/rpc/trainer_service.h"

namespace qtrain::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  engine::SessionManagerOptions sessions;
  rpc::ServiceLimits limits;
};

class RunningServer {
 public:
  // Starts serving. Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<RunningServer>> Start(const ServerOptions& options);
  ~RunningServer();  // Shutdown()

  int port() const { return port_; }
  // Graceful: stop accepting calls, let in-flight steps finish (up to `deadline_ms`), then stop
  // every session's executor. Idempotent.
  void Shutdown(int deadline_ms = 5000);
  void Wait() { server_->Wait(); }

 private:
  RunningServer() = default;
  std::unique_ptr<engine::SessionManager> sessions_;
  std::unique_ptr<rpc::TrainerService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace qtrain::server
