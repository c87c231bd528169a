// Assembly of a qtrain server from its options: the session manager, the Trainer service,
// health checking and reflection, listening on an address ("127.0.0.1:0" picks a free port).
// Used by qtrain-server's main and by the integration tests, which run the real server
// in-process.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/server.h>

#include "absl/status/statusor.h"
#include "server/cluster/cluster_options.h"
#include "server/cluster/dp_worker.h"
#include "server/engine/memory_budget.h"
#include "server/engine/session.h"
#include "server/ops/session_ops.h"
#include "server/rpc/access.h"
#include "server/rpc/auth.h"
#include "server/rpc/cluster_service.h"
#include "server/rpc/reflection_v1.h"
#include "server/rpc/service_access.h"
#include "server/rpc/trainer_service.h"
#include "server/store/session_store.h"

namespace qtrain::server {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";
  // TLS: PEM files of the server's certificate chain and key (both, or neither: plaintext).
  // With `tls_client_ca` set, clients must present a certificate signed by it (mutual TLS).
  std::string tls_cert;
  std::string tls_key;
  std::string tls_client_ca;
  int tls_reload_seconds = 60;  // how often the TLS files are re-read (rotation without restart)
  // Authentication (rpc/auth.h; needs TLS): the access file of bearer tokens, and/or the mutual
  // TLS certificate's common name as the tenant with `tls_client_role`.
  std::string auth_tokens;
  bool tls_client_identity = false;
  std::string tls_client_role = "trainer";
  // Without authentication only loopback addresses may be listened on, unless this is set.
  bool allow_insecure = false;
  // Per-tenant limits when the access file sets none (0: no per-tenant limit).
  rpc::TenantQuota tenant_quota;
  // The audit log of mutating and refused calls (audit_log.h): "-" stderr, a path, "none"; ""
  // picks stderr when authentication is on, none otherwise.
  std::string audit_log;
  std::string data_dir;        // empty: no durable sessions (tests)
  std::string replica_name;    // GetServerInfo's `replica` (--replica_name)
  int64_t autosave_steps = 0;  // save a session every N training steps; 0: only on shutdown
  std::string metrics_listen;  // empty: metrics kept in memory only (tests read metrics())
  // Empty, or a second, plaintext port that serves grpc.health.v1 only (Kubernetes' gRPC probes
  // cannot speak TLS).
  std::string health_listen;
  // What sessions, steps and uploads may reserve (engine::MemoryBudget): 0 picks
  // DefaultMemoryBudgetBytes(); negative: unlimited.
  int64_t memory_budget_bytes = 0;
  engine::SessionManagerOptions sessions;
  rpc::ServiceLimits limits;
  // Data-parallel groups (docs/scaling.md): this server leads sessions with world_size > 1 and
  // serves as a worker rank for its peers; disabled while cluster.rendezvous is empty.
  cluster::ClusterOptions cluster;
};

class RunningServer {
 public:
  // Starts serving. InvalidArgument naming the flag for unreadable or incomplete TLS files, a bad
  // access file, or authentication without TLS; FailedPrecondition for a non-loopback --listen
  // without authentication or --allow_insecure;
  // InvalidArgument naming --dp_rendezvous or --dp_secret_file for a bad data-parallel setup;
  // Unavailable when --listen, --health_listen or --metrics_listen cannot be bound;
  // FailedPrecondition when another server holds the data dir; Internal for an unusable data dir.
  static absl::StatusOr<std::unique_ptr<RunningServer>> Start(const ServerOptions& options);
  ~RunningServer();  // Shutdown()

  int port() const { return port_; }
  int health_port() const { return health_port_; }  // 0 without --health_listen
  // Sessions restored from the data dir at start, and files that could not be restored.
  const std::vector<std::string>& restored() const { return restored_; }
  const std::vector<std::string>& restore_errors() const { return restore_errors_; }
  // Graceful drain: readiness turns NOT_SERVING at once and new work is refused UNAVAILABLE
  // (health, reads and deletes still answer); the server stays up at least `grace_ms` (so that
  // load balancers see it leave) and until in-flight steps finish, up to `deadline_ms` in all;
  // then every session is saved to the data dir, the server stops, the executors join and the
  // data dir is released. Idempotent.
  void Shutdown(int deadline_ms = 5000, int grace_ms = 0);
  void Wait() { server_->Wait(); }
  rpc::Metrics& metrics() { return *metrics_; }
  // The CPU, ISA and int8 kernels this server computes with (GetServerInfo's answer).
  const v1::ServerInfo& info() const { return info_; }
  // Host memory's budget (--memory_budget_mb).
  const engine::MemoryBudget& budget() const { return *budgets_->host(); }

 private:
  RunningServer() = default;
  std::unique_ptr<rpc::Metrics> metrics_;  // outlives the server (declared first)
  std::unique_ptr<rpc::AccessFile> access_;
  std::unique_ptr<rpc::Authenticator> auth_;  // outlives the server's credentials
  std::unique_ptr<rpc::AuditLog> audit_;
  std::unique_ptr<rpc::TenantQuotas> tenants_;
  rpc::ServiceAccess service_access_;  // points at the three above; shared with the handlers
  std::unique_ptr<store::SessionStore> store_;
  // One per device; outlives the sessions holding their leases.
  std::unique_ptr<engine::DeviceBudgets> budgets_;
  std::unique_ptr<engine::SessionManager> sessions_;
  std::unique_ptr<ops::SessionOps> ops_;  // over sessions_ and store_
  rpc::ServiceState state_;               // shared with the handlers; outlives the server
  std::unique_ptr<rpc::TrainerService> service_;
  std::unique_ptr<rpc::ReflectionV1> reflection_;
  std::unique_ptr<cluster::WorkerRanks> workers_;  // the groups this server serves as a worker
  std::unique_ptr<rpc::ClusterService> cluster_service_;
  std::unique_ptr<grpc::Server> server_;
  // --health_listen's answer to other methods; outlives health_server_ (declared first).
  std::unique_ptr<grpc::CallbackGenericService> health_only_;
  std::unique_ptr<grpc::Server> health_server_;  // --health_listen; may be null
  int port_ = 0;
  int health_port_ = 0;
  // Sets a health service name on both the main and the health-only server.
  void SetHealth(const char* name, bool serving);
  bool shut_down_ = false;
  std::vector<std::string> restored_;
  std::vector<std::string> restore_errors_;
  v1::ServerInfo info_;
};

}  // namespace qtrain::server
