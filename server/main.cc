// qtrain-server: hosts training sessions and serves qtrain.v1.Trainer over gRPC, with
// grpc.health.v1 health checking and server reflection. SIGINT / SIGTERM shut it down
// gracefully: no new calls, in-flight steps finish, exit 0.
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend/backend_registry.h"
#include "kernels/backend/float_gemm.h"
#include "kernels/cpu_isa.h"
#include "server/cluster_flags.h"
#include "server/log.h"
#include "server/rpc/server_info.h"
#include "server/server_main.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:50051",
          "gRPC listen address (host:port; port 0 picks a free one)");
ABSL_FLAG(std::string, data_dir, "qtrain-data",
          "directory of durable sessions (restored at start, saved at shutdown); empty: none");
ABSL_FLAG(int64_t, autosave_steps, 100, "save each session every N training steps (0: off)");
ABSL_FLAG(std::string, metrics_listen, "127.0.0.1:9464",
          "Prometheus /metrics address (empty: no metrics endpoint)");
ABSL_FLAG(std::string, health_listen, "",
          "also serve grpc.health.v1 alone, in plaintext, on this address (for Kubernetes' gRPC "
          "probes, which cannot speak TLS); empty: no such port");
ABSL_FLAG(int, threads, 1, "OpenMP threads per session executor");
ABSL_FLAG(std::string, backend, qtrain::kDefaultBackend,
          "the backend sessions run on unless they name one (CreateSessionRequest.backend): "
          "onednn, or reference (plain loops: slow, for checking numerics)");
ABSL_FLAG(std::string, float_gemm, "",
          "float matmul implementation: auto (per shape, OpenBLAS where it measures at least 10% "
          "faster than oneDNN), onednn or openblas (the same bits run after run); default: "
          "$QTRAIN_FLOAT_GEMM, else auto");
ABSL_FLAG(std::string, replica_name, "",
          "this server's name among replicas behind a routing proxy, in GetServerInfo (default: "
          "the host name; a StatefulSet pod's name)");
ABSL_FLAG(int, max_sessions, 16, "most sessions hosted at once (RESOURCE_EXHAUSTED beyond)");
ABSL_FLAG(int, max_queued, 8, "most operations queued per session before pushing back");
ABSL_FLAG(int, max_inflight, 4, "batches a Train stream may send ahead of its results");
ABSL_FLAG(int64_t, max_batch_bytes, int64_t{256} << 20, "largest tensor accepted in a request");
ABSL_FLAG(int64_t, memory_budget_mb, 0,
          "memory sessions, steps and uploads may reserve; beyond it RESOURCE_EXHAUSTED (0: 80% of "
          "physical memory or the cgroup limit; -1: unlimited)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM certificate chain of the server: serve TLS (with --tls_key)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA: clients must present a certificate it signed (mutual TLS)");
ABSL_FLAG(int, tls_reload_seconds, 60,
          "re-read --tls_cert, --tls_key and --tls_client_ca this often: new connections use "
          "rotated certificates without a restart");
ABSL_FLAG(std::string, auth_tokens, "",
          "access file (JSON) of SHA-256-hashed bearer tokens, each naming a tenant and a role "
          "(admin, trainer, reader), and per-tenant quotas; re-read when it changes. Needs TLS. "
          "See docs/security.md; `qtrain token` makes tokens");
ABSL_FLAG(bool, tls_client_identity, false,
          "mutual TLS: a client certificate's common name names its tenant (role: "
          "--tls_client_role) when the call carries no bearer token");
ABSL_FLAG(std::string, tls_client_role, "trainer",
          "the role of tenants identified by their client certificate: admin, trainer or reader");
ABSL_FLAG(bool, allow_insecure, false,
          "serve a non-loopback --listen without authentication (anyone who reaches the port may "
          "read, overwrite or delete every session): only on a network you trust");
ABSL_FLAG(std::string, audit_log, "",
          "one JSON line per state-changing or refused call (time, tenant, role, peer, method, "
          "session, code): - (stderr), a file to append to, or none; empty: stderr when "
          "authentication is on, else none");
ABSL_FLAG(int64_t, tenant_max_sessions, 0,
          "sessions per tenant when the access file sets no max_sessions (0: no per-tenant limit)");
ABSL_FLAG(int64_t, tenant_max_parameters, 0,
          "parameters over all of a tenant's sessions, unless its max_parameters says (0: none)");
ABSL_FLAG(int64_t, tenant_max_streams, 0,
          "concurrent Train / Calibrate / Evaluate streams per tenant, unless its max_streams says "
          "(0: none)");
ABSL_FLAG(int64_t, tenant_max_checkpoint_bytes, 0,
          "checkpoint bytes on disk per tenant, unless its max_checkpoint_bytes says (0: none)");
ABSL_FLAG(std::string, log_format, "text",
          "server log lines: text (for people) or json (one object per line: ts, level, event, "
          "msg and the event's fields)");
ABSL_FLAG(int, drain_grace_seconds, 0,
          "on SIGTERM, report NOT_SERVING on health 'readiness' and refuse new work for at least "
          "this long before stopping (let load balancers see the pod leave)");
ABSL_FLAG(int, shutdown_deadline_seconds, 30,
          "on SIGTERM, the most time for in-flight steps to finish; then they are cancelled and "
          "every session is saved");
ABSL_FLAG(int64_t, max_checkpoint_bytes, int64_t{4} << 30, "largest checkpoint upload accepted");

namespace {
volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }
}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "quantized training (Qwix-compatible QAT / QT / SRQ) over gRPC.\n"
      "Usage: qtrain-server [--listen=HOST:PORT] [--threads=N] ...");
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view file) {
    return absl::EndsWith(file, "server/main.cc") ||
           absl::EndsWith(file, "server/cluster_flags.cc");
  };
  absl::SetFlagsUsageConfig(usage);
  absl::ParseCommandLine(argc, argv);
  qtrain::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.sessions.max_sessions = absl::GetFlag(FLAGS_max_sessions);
  options.sessions.session.threads = absl::GetFlag(FLAGS_threads);
  options.sessions.session.backend = absl::GetFlag(FLAGS_backend);
  options.sessions.session.max_queued = absl::GetFlag(FLAGS_max_queued);
  options.limits.max_inflight_batches = absl::GetFlag(FLAGS_max_inflight);
  options.limits.max_batch_bytes = absl::GetFlag(FLAGS_max_batch_bytes);
  options.limits.max_checkpoint_bytes = absl::GetFlag(FLAGS_max_checkpoint_bytes);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.replica_name = absl::GetFlag(FLAGS_replica_name);
  if (options.replica_name.empty()) {
    char host[256] = {};
    if (gethostname(host, sizeof host - 1) == 0) options.replica_name = host;
  }
  options.autosave_steps = absl::GetFlag(FLAGS_autosave_steps);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.tls_client_ca = absl::GetFlag(FLAGS_tls_client_ca);
  options.tls_reload_seconds = absl::GetFlag(FLAGS_tls_reload_seconds);
  options.auth_tokens = absl::GetFlag(FLAGS_auth_tokens);
  options.tls_client_identity = absl::GetFlag(FLAGS_tls_client_identity);
  options.tls_client_role = absl::GetFlag(FLAGS_tls_client_role);
  options.allow_insecure = absl::GetFlag(FLAGS_allow_insecure);
  options.audit_log = absl::GetFlag(FLAGS_audit_log);
  options.tenant_quota = {
      absl::GetFlag(FLAGS_tenant_max_sessions), absl::GetFlag(FLAGS_tenant_max_parameters),
      absl::GetFlag(FLAGS_tenant_max_streams), absl::GetFlag(FLAGS_tenant_max_checkpoint_bytes)};
  using qtrain::server::LogEvent;
  using qtrain::server::LogLevel;
  const std::string log_format = absl::GetFlag(FLAGS_log_format);
  if (log_format != "text" && log_format != "json") {
    std::fprintf(stderr, "qtrain-server: --log_format=%s must be text or json\n",
                 log_format.c_str());
    return 2;
  }
  qtrain::server::SetJsonLogs(log_format == "json");
  if (!qtrain::IsBackend(options.sessions.session.backend)) {
    std::fprintf(stderr, "qtrain-server: --backend=%s is not one of %s\n",
                 options.sessions.session.backend.c_str(), qtrain::BackendNames().c_str());
    return 2;
  }
  if (const std::string gemm = absl::GetFlag(FLAGS_float_gemm); !gemm.empty()) {
    auto policy = qtrain::ParseFloatGemmPolicy(gemm);
    if (!policy.ok()) {
      std::fprintf(stderr, "qtrain-server: --float_gemm: %s\n",
                   std::string(policy.status().message()).c_str());
      return 2;
    }
    qtrain::SetFloatGemmPolicy(*policy);
  }
  const int64_t budget_mb = absl::GetFlag(FLAGS_memory_budget_mb);
  if (budget_mb < -1 || budget_mb > (int64_t{1} << 40)) {
    LogEvent(LogLevel::kError, "bad_flag",
             absl::StrCat(": --memory_budget_mb=", budget_mb, " must be -1, 0 or a size in MiB"));
    return 2;
  }
  options.memory_budget_bytes = budget_mb <= 0 ? budget_mb : budget_mb << 20;
  if (options.sessions.max_sessions < 1 || options.sessions.session.threads < 1 ||
      options.sessions.session.max_queued < 1 || options.limits.max_inflight_batches < 1 ||
      options.limits.max_batch_bytes < 1 || options.limits.max_checkpoint_bytes < 1 ||
      options.autosave_steps < 0 || absl::GetFlag(FLAGS_drain_grace_seconds) < 0 ||
      absl::GetFlag(FLAGS_shutdown_deadline_seconds) < 1 || options.tls_reload_seconds < 1 ||
      options.tenant_quota.max_sessions < 0 || options.tenant_quota.max_parameters < 0 ||
      options.tenant_quota.max_streams < 0 || options.tenant_quota.max_checkpoint_bytes < 0) {
    LogEvent(LogLevel::kError, "bad_flag", ": every limit flag must be >= 1");
    return 2;
  }
  if (absl::Status isa = qtrain::ValidateIsaEnvironment(); !isa.ok()) {
    LogEvent(LogLevel::kError, "bad_isa", absl::StrCat(": ", isa.message()));
    return 1;
  }
  if (qtrain::ActiveIsa() < qtrain::Isa::kAvx2) {
    LogEvent(LogLevel::kWarning, "slow_cpu",
             absl::StrCat(": warning: ", qtrain::CpuSummary(),
                          " has no AVX2+FMA (below x86-64-v3); int8 runs on the reference "
                          "loops: exact, but many times slower"));
  }
  absl::StatusOr<qtrain::cluster::ClusterOptions> cluster = qtrain::server::ClusterOptionsFromFlags(
      options.sessions.session.threads, options.tls_cert, options.tls_key);
  if (!cluster.ok()) {
    LogEvent(LogLevel::kError, "bad_flag", absl::StrCat(": ", cluster.status().message()));
    return 2;
  }
  options.cluster = *std::move(cluster);
  auto server = qtrain::server::RunningServer::Start(options);
  if (!server.ok()) {
    LogEvent(LogLevel::kError, "start_failed", absl::StrCat(": ", server.status().ToString()));
    return 1;
  }
  std::signal(SIGINT, OnSignal);
  std::signal(SIGTERM, OnSignal);
  for (const std::string& e : (*server)->restore_errors()) {
    LogEvent(LogLevel::kError, "not_restored", absl::StrCat(": not restored: ", e));
  }
  const int port = (*server)->port();
  LogEvent(LogLevel::kInfo, "listening",
           absl::StrCat(" listening on port ", port, " (", (*server)->restored().size(),
                        " sessions restored from ", options.data_dir, ")"),
           {{"port", absl::StrCat(port)},
            {"restored", absl::StrCat((*server)->restored().size())},
            {"data_dir", options.data_dir}});
  LogEvent(LogLevel::kInfo, "cpu",
           absl::StrCat(" cpu: ", qtrain::rpc::ServerInfoSummary((*server)->info())));
  const int64_t budget = (*server)->budget().limit();
  LogEvent(LogLevel::kInfo, "memory_budget",
           absl::StrCat(
               " memory budget: ", budget > 0 ? qtrain::engine::HumanBytes(budget) : "unlimited",
               " (--memory_budget_mb)"),
           {{"bytes", absl::StrCat(budget)}});
  if ((*server)->health_port() > 0) {
    LogEvent(
        LogLevel::kInfo, "health",
        absl::StrCat(" health (plaintext, grpc.health.v1 only) on port ", (*server)->health_port()),
        {{"port", absl::StrCat((*server)->health_port())}});
  }
  if ((*server)->metrics().port() > 0) {
    LogEvent(LogLevel::kInfo, "metrics",
             absl::StrCat(" metrics on http://127.0.0.1:", (*server)->metrics().port(), "/metrics"),
             {{"port", absl::StrCat((*server)->metrics().port())}});
  }
  while (!g_stop) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  LogEvent(LogLevel::kInfo, "draining",
           ": draining (readiness NOT_SERVING, new work refused), then saving");
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_deadline_seconds) * 1000,
                      absl::GetFlag(FLAGS_drain_grace_seconds) * 1000);
  LogEvent(LogLevel::kInfo, "stopped", ": shutting down");
  return 0;
}
