#include "server/server_main.h"

#include "server/cluster/dp_leader.h"
#include "server/cluster/gloo_group.h"

#include <arpa/inet.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "grpc/health/v1/health.pb.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"
#include "server/cluster/dp_leader.h"
#include "server/cluster/gloo_group.h"
#include "server/log.h"
#include "server/rpc/reflection_v1.h"
#include "server/rpc/server_info.h"
#include "server/store/checkpoint_io.h"

namespace qtrain::server {
namespace {

// The listening port's credentials: plaintext, TLS, or mutual TLS (server_main.h). TLS files are
// read once here, so that a bad path fails the start with a clear message, and then watched:
// gRPC re-reads them every `tls_reload_seconds`, and new connections use the new certificates.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> Credentials(const ServerOptions& o) {
  if (o.tls_cert.empty() && o.tls_key.empty()) {
    if (!o.tls_client_ca.empty()) {
      return absl::InvalidArgumentError("--tls_client_ca needs --tls_cert and --tls_key");
    }
    return grpc::InsecureServerCredentials();
  }
  if (o.tls_cert.empty() || o.tls_key.empty()) {
    return absl::InvalidArgumentError("TLS needs both --tls_cert and --tls_key");
  }
  auto check = [](const std::string& flag, const std::string& path) -> absl::Status {
    absl::StatusOr<std::string> pem = store::ReadWholeFile(path, int64_t{1} << 20);
    if (!pem.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", flag, "=", path, ": ", pem.status().message()));
    }
    if (!absl::StrContains(*pem, "-----BEGIN ")) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": not a PEM file"));
    }
    return absl::OkStatus();
  };
  QTRAIN_RETURN_IF_ERROR(check("tls_cert", o.tls_cert));
  QTRAIN_RETURN_IF_ERROR(check("tls_key", o.tls_key));
  const unsigned refresh = static_cast<unsigned>(std::max(1, o.tls_reload_seconds));
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> files;
  if (o.tls_client_ca.empty()) {
    files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        o.tls_key, o.tls_cert, refresh);
  } else {
    QTRAIN_RETURN_IF_ERROR(check("tls_client_ca", o.tls_client_ca));
    files = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        o.tls_key, o.tls_cert, o.tls_client_ca, refresh);
  }
  grpc::experimental::TlsServerCredentialsOptions tls(files);
  tls.watch_identity_key_cert_pairs();
  if (!o.tls_client_ca.empty()) {
    tls.watch_root_certs();
    tls.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

constexpr char kLiveness[] = "liveness";
constexpr char kStartup[] = "startup";
constexpr char kReadiness[] = "readiness";

// Loopback: 127.0.0.0/8, ::1, localhost, and unix sockets.
bool IsLoopback(const std::string& listen) {
  absl::string_view host = listen;
  if (absl::StartsWith(host, "unix:")) return true;
  if (const size_t colon = host.rfind(':'); colon != absl::string_view::npos) {
    host = host.substr(0, colon);
  }
  if (absl::ConsumePrefix(&host, "[")) absl::ConsumeSuffix(&host, "]");
  in_addr v4;
  return host == "localhost" || host == "::1" ||
         (absl::StartsWith(host, "127.") &&
          inet_pton(AF_INET, std::string(host).c_str(), &v4) == 1);
}

// Drops gRPC's reflection plugin, which it registers for every server: the health-only port
// serves grpc.health.v1 and nothing else.
class NoReflection final : public grpc::ServerBuilderOption {
 public:
  void UpdateArguments(grpc::ChannelArguments*) override {}
  void UpdatePlugins(std::vector<std::unique_ptr<grpc::ServerBuilderPlugin>>* plugins) override {
    plugins->erase(
        std::remove_if(plugins->begin(), plugins->end(),
                       [](const auto& p) { return p->name() == "proto_server_reflection"; }),
        plugins->end());
  }
};

// Every method but health's on the health-only port: UNIMPLEMENTED. (It also gives that server
// the callback service gRPC needs before it adds its own health service.)
class HealthOnly final : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(grpc::GenericCallbackServerContext*) override {
    struct Refuse final : grpc::ServerGenericBidiReactor {
      Refuse() {
        Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                            "this port serves grpc.health.v1 only (--health_listen)"));
      }
      void OnDone() override { delete this; }
    };
    return new Refuse();
  }
};

}  // namespace

absl::StatusOr<std::unique_ptr<RunningServer>> RunningServer::Start(const ServerOptions& o) {
  // Bad TLS or access files fail before anything starts (no data dir locked, no session
  // restored).
  QTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials, Credentials(o));
  auto s = std::unique_ptr<RunningServer>(new RunningServer());
  std::optional<rpc::Role> cert_role = rpc::ParseRole(o.tls_client_role);
  if (!cert_role) {
    return absl::InvalidArgumentError(
        absl::StrCat("--tls_client_role=", o.tls_client_role, " must be admin, trainer or reader"));
  }
  if (o.tls_client_identity && o.tls_client_ca.empty()) {
    return absl::InvalidArgumentError("--tls_client_identity needs --tls_client_ca (mutual TLS)");
  }
  if (!o.auth_tokens.empty()) {
    QTRAIN_ASSIGN_OR_RETURN(
        s->access_, rpc::AccessFile::Open(o.auth_tokens, [](const absl::Status& error) {
          LogEvent(LogLevel::kError, "auth_reload_failed",
                   absl::StrCat(": ", error.message(), " (the previous tokens stay in force)"));
        }));
  }
  s->auth_ = std::make_unique<rpc::Authenticator>(
      rpc::AuthOptions{s->access_.get(), o.tls_client_identity, *cert_role});
  if (s->auth_->enabled()) {
    if (o.tls_cert.empty()) {
      return absl::InvalidArgumentError(
          "--auth_tokens needs TLS (--tls_cert, --tls_key): bearer tokens must not travel in "
          "plaintext");
    }
    credentials->SetAuthMetadataProcessor(std::make_shared<rpc::AuthProcessor>(s->auth_.get()));
  } else if (!IsLoopback(o.listen) && !o.allow_insecure) {
    return absl::FailedPreconditionError(absl::StrCat(
        "refusing to serve --listen=", o.listen,
        " without authentication: anyone who reaches it could read, overwrite or delete every "
        "session. Give --auth_tokens (with --tls_cert/--tls_key; docs/security.md), listen on "
        "127.0.0.1, or pass --allow_insecure on a network you trust"));
  }
  if (o.metrics_listen.empty()) {
    s->metrics_ = std::make_unique<rpc::Metrics>();
  } else {
    absl::StatusOr<std::unique_ptr<rpc::Metrics>> m = rpc::Metrics::Serve(o.metrics_listen);
    if (!m.ok()) return m.status();
    s->metrics_ = std::move(*m);
  }
  // Every backend today keeps its tensors in host memory: one device, the host's budget. A device
  // backend adds its device's pool here.
  s->budgets_ = std::make_unique<engine::DeviceBudgets>(
      o.memory_budget_bytes == 0 ? engine::DefaultMemoryBudgetBytes() : o.memory_budget_bytes);
  engine::MemoryBudget* host = s->budgets_->host();
  // Freed step buffers kept for reuse count against nobody's lease: at most a quarter of the
  // budget stays cached beside the sessions' memory.
  if (host->limit() > 0) {
    SetBufferPoolLimit(
        std::min<size_t>(kDefaultBufferPoolBytes, static_cast<size_t>(host->limit() / 4)));
  }
  engine::SessionManagerOptions session_options = o.sessions;
  session_options.session.budgets = s->budgets_.get();
  rpc::ServiceLimits limits = o.limits;
  limits.budget = host;  // requests' buffers are host memory
  limits.devices = s->budgets_.get();
  limits.state = &s->state_;
  if (!o.data_dir.empty()) {
    absl::StatusOr<std::unique_ptr<store::SessionStore>> store =
        store::SessionStore::Open(o.data_dir);
    if (!store.ok()) return store.status();
    s->store_ = std::move(*store);
    if (o.autosave_steps > 0) {
      store::SessionStore* st = s->store_.get();
      rpc::Metrics* metrics = s->metrics_.get();
      const int64_t every = o.autosave_steps;
      session_options.session.after_task = ops::SessionOps::Autosave(
          st, every,
          [metrics](const std::string& id, double seconds,
                    const absl::StatusOr<store::SavedCheckpoint>& saved) {
            if (saved.ok()) {
              metrics->RecordCheckpoint("autosave", seconds, saved->bytes);
              return;
            }
            metrics->RecordCheckpointError("autosave");
            LogEvent(LogLevel::kError, "autosave_failed",
                     absl::StrCat(": autosave of ", id, " failed: ", saved.status().ToString()),
                     {{"session", id}});
          });
    }
  }
  s->sessions_ = std::make_unique<engine::SessionManager>(session_options);
  const std::string audit =
      o.audit_log.empty() ? (s->auth_->enabled() ? "-" : "none") : o.audit_log;
  if (audit != "none") {
    QTRAIN_ASSIGN_OR_RETURN(s->audit_, rpc::AuditLog::Open(audit));
  }
  s->tenants_ =
      std::make_unique<rpc::TenantQuotas>(s->access_.get(), o.tenant_quota, s->sessions_.get());
  s->service_access_ = {s->auth_.get(), s->tenants_.get(), s->audit_.get()};
  limits.access = &s->service_access_;
  engine::StepGroupFactory groups;
  if (o.cluster.enabled()) {
    if (absl::Status v = cluster::ValidateRendezvous(o.cluster.rendezvous); !v.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--dp_rendezvous: ", v.message()));
    }
    if (o.cluster.secret.empty()) {
      return absl::InvalidArgumentError(
          "--dp_secret_file: data-parallel groups need the cluster secret (the same file on "
          "every server of the deployment)");
    }
    groups = [c = o.cluster](const std::string& id,
                             int world) -> absl::StatusOr<std::unique_ptr<engine::StepGroup>> {
      QTRAIN_RETURN_IF_ERROR(cluster::CheckWorldSize(c, world));
      return std::make_unique<cluster::DataParallelLeader>(c, world, id);
    };
  }
  s->workers_ = std::make_unique<cluster::WorkerRanks>(o.cluster, s->budgets_.get());
  s->cluster_service_ = std::make_unique<rpc::ClusterService>(s->workers_.get());
  if (s->store_) {
    s->restored_ = s->store_->RestoreAll(*s->sessions_, &s->restore_errors_, groups);
  }
  s->ops_ = std::make_unique<ops::SessionOps>(
      ops::SessionOpsOptions{s->sessions_.get(), s->store_.get(), host, std::move(groups)});
  s->service_ = std::make_unique<rpc::TrainerService>(s->ops_.get(), limits, s->metrics_.get());
  s->metrics_->SetSessions(static_cast<int64_t>(s->sessions_->List().size()));
  s->metrics_->TrackMemory(s->budgets_.get());
  s->metrics_->TrackProcess(o.data_dir);
  engine::SessionManager* sessions = s->sessions_.get();
  s->metrics_->TrackSessions([sessions] { return sessions->List(); });
  absl::StatusOr<v1::ServerInfo> info =
      rpc::MakeServerInfo(o.sessions.session.threads, s->budgets_.get());
  if (!info.ok()) return info.status();
  info->set_replica(o.replica_name);
  s->metrics_->SetHardwareInfo(*info);
  s->info_ = *info;
  s->service_->SetServerInfo(*std::move(info));
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();  // v1alpha
  // gRPC's health service is built without protobuf: linking its generated descriptor lets
  // reflection (both versions) describe it.
  (void)grpc::health::v1::HealthCheckRequest::descriptor();
  s->reflection_ = std::make_unique<rpc::ReflectionV1>(std::vector<std::string>{
      "qtrain.v1.Trainer", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection"});
  grpc::ServerBuilder builder;
  // One server per port: without this gRPC sets SO_REUSEPORT, and a second server on a busy
  // port would start and share its clients with the first.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.AddListeningPort(o.listen, credentials, &s->port_);
  builder.RegisterService(s->service_.get());
  builder.RegisterService(s->reflection_.get());
  builder.RegisterService(s->cluster_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(s->metrics_->InterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // Batches arrive as raw bytes; the server's own limit (max_batch_bytes) is the one that
  // matters, so gRPC's message limit is set above it.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::min<int64_t>(2 * o.limits.max_batch_bytes + (1 << 20), INT32_MAX)));
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on --listen=", o.listen, " (address in use or invalid)"));
  }
  // Health by service name too, as clients that check "qtrain.v1.Trainer" expect, and one name
  // per Kubernetes probe: "liveness" (the process serves), "startup" (sessions restored: Start
  // returns only then) and "readiness" (restored and not draining; "" and qtrain.v1.Trainer
  // follow it).
  if (!o.health_listen.empty()) {
    // Plaintext, health only: kubelet's gRPC probes cannot speak TLS.
    grpc::ServerBuilder health;
    health.SetOption(std::make_unique<NoReflection>());
    s->health_only_ = std::make_unique<HealthOnly>();
    health.RegisterCallbackGenericService(s->health_only_.get());
    health.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
    health.AddListeningPort(o.health_listen, grpc::InsecureServerCredentials(), &s->health_port_);
    s->health_server_ = health.BuildAndStart();
    if (s->health_server_ == nullptr || s->health_port_ == 0) {
      return absl::UnavailableError(absl::StrCat(
          "cannot listen on --health_listen=", o.health_listen, " (address in use or invalid)"));
    }
  }
  for (const char* name : {kLiveness, kStartup, kReadiness, v1::Trainer::service_full_name()}) {
    s->SetHealth(name, true);
  }
  return s;
}

RunningServer::~RunningServer() { Shutdown(); }

void RunningServer::SetHealth(const char* name, bool serving) {
  for (grpc::Server* server : {server_.get(), health_server_.get()}) {
    if (server != nullptr) server->GetHealthCheckService()->SetServingStatus(name, serving);
  }
}

void RunningServer::Shutdown(int deadline_ms, int grace_ms) {
  if (shut_down_) return;
  shut_down_ = true;
  // A server that never started (Start failed part-way) has nothing new to save.
  if (server_ == nullptr) {
    if (workers_ != nullptr) workers_->Shutdown();
    if (sessions_ != nullptr) sessions_->ShutdownAll();
    if (metrics_ != nullptr) metrics_->UntrackSessions();
    return;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::milliseconds(deadline_ms);
  // Drain: not ready and no new work, while health and reads still answer.
  state_.draining = true;
  for (const char* name : {"", kReadiness, v1::Trainer::service_full_name()}) {
    SetHealth(name, false);
  }
  auto busy = [&] {
    if (state_.streams > 0) return true;
    for (const engine::SessionInfo& info : sessions_->List()) {
      if (info.queued > 0) return true;
    }
    return false;
  };
  while (
      std::chrono::steady_clock::now() < deadline &&
      (busy() || std::chrono::steady_clock::now() < start + std::chrono::milliseconds(grace_ms))) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // Whatever still runs at the deadline is cancelled. With nothing in flight, a short grace
  // only: gRPC would otherwise wait out the deadline for clients that merely keep a connection.
  const auto left = busy() ? std::max(deadline - std::chrono::steady_clock::now(),
                                      std::chrono::steady_clock::duration::zero())
                           : std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::milliseconds(200));
  server_->Shutdown(std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(left));
  if (health_server_ != nullptr) health_server_->Shutdown();
  workers_->Shutdown();  // this server's worker ranks leave their groups
  ops_->SaveAll([](const std::string& id, const absl::Status& error) {
    LogEvent(LogLevel::kError, "save_failed",
             absl::StrCat(": saving ", id, " at shutdown failed: ", error.ToString()),
             {{"session", id}});
  });
  sessions_->ShutdownAll();
  metrics_->UntrackSessions();  // the exposer outlives the session manager
  store_.reset();               // releases the data dir's lock for the next server
}

}  // namespace qtrain::server
