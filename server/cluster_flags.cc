#include "server/cluster_flags.h"

#include <grpcpp/security/credentials.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/store/checkpoint_io.h"

ABSL_FLAG(std::string, dp_rendezvous, "",
          "where data-parallel ranks meet: file:///SHARED/DIR (one host) or redis://HOST:PORT; "
          "empty: no data parallelism");
ABSL_FLAG(std::string, dp_peers, "",
          "comma-separated gRPC addresses of the servers that serve as this one's worker ranks, "
          "in rank order (a session of world_size N uses the first N-1)");
ABSL_FLAG(std::string, dp_self, "",
          "this server's own entry in --dp_peers, left out of its peers: every pod of a "
          "StatefulSet can share one --dp_peers list");
ABSL_FLAG(std::string, dp_secret_file, "",
          "file holding the cluster secret, the same on every server: proves JoinGroup calls and "
          "ranks (docs/security.md)");
ABSL_FLAG(std::string, dp_host, "127.0.0.1",
          "the address other ranks reach this server's ranks at (Gloo's TCP transport: keep it "
          "on a private network, it has no TLS)");
ABSL_FLAG(int64_t, dp_timeout_ms, 30000,
          "forming a group and each collective; a rank that does not answer in time fails the "
          "step UNAVAILABLE");
ABSL_FLAG(int64_t, dp_bucket_mb, 25, "gradient all-reduce bucket size in MiB");
ABSL_FLAG(int64_t, dp_idle_timeout_s, 600,
          "a worker rank leaves its group after this long without a step (the leader re-forms "
          "it at the next one)");
ABSL_FLAG(int, dp_max_worker_groups, 4, "groups this server serves as a worker at once");
ABSL_FLAG(std::string, dp_peer_ca, "",
          "PEM CA that signs the peers' certificates: JoinGroup calls use TLS (with this "
          "server's --tls_cert as client certificate); empty: plaintext");

namespace qtrain::server {
namespace {

// The contents of `path`, or InvalidArgument naming the flag (the files are small PEM or secret
// files: 1 MiB at most).
absl::StatusOr<std::string> ReadFile(const std::string& flag, const std::string& path) {
  absl::StatusOr<std::string> bytes = store::ReadWholeFile(path, 1 << 20);
  if (!bytes.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, "=", path, ": ", bytes.status().message()));
  }
  return bytes;
}

}  // namespace

absl::StatusOr<cluster::ClusterOptions> ClusterOptionsFromFlags(int threads,
                                                                const std::string& tls_cert,
                                                                const std::string& tls_key) {
  cluster::ClusterOptions c;
  c.rendezvous = absl::GetFlag(FLAGS_dp_rendezvous);
  const std::string self = absl::GetFlag(FLAGS_dp_self);
  for (absl::string_view p :
       absl::StrSplit(absl::GetFlag(FLAGS_dp_peers), ',', absl::SkipEmpty())) {
    p = absl::StripAsciiWhitespace(p);
    if (p != self) c.peers.emplace_back(p);
  }
  if (!c.rendezvous.empty() || !c.peers.empty()) {
    const std::string path = absl::GetFlag(FLAGS_dp_secret_file);
    if (path.empty()) {
      return absl::InvalidArgumentError(
          "--dp_secret_file: data-parallel groups need the cluster secret");
    }
    absl::StatusOr<std::string> secret = ReadFile("dp_secret_file", path);
    if (!secret.ok()) return secret.status();
    c.secret = std::string(absl::StripTrailingAsciiWhitespace(*secret));
    if (c.secret.size() < 16) {
      return absl::InvalidArgumentError(
          absl::StrCat("--dp_secret_file=", path, ": the secret has ", c.secret.size(),
                       " characters; use at least 16 (e.g. openssl rand -hex 32)"));
    }
    if (c.rendezvous.empty()) {
      return absl::InvalidArgumentError("--dp_rendezvous: --dp_peers needs a rendezvous");
    }
  }
  c.bind_host = absl::GetFlag(FLAGS_dp_host);
  c.timeout_ms = absl::GetFlag(FLAGS_dp_timeout_ms);
  c.bucket_bytes = absl::GetFlag(FLAGS_dp_bucket_mb) << 20;
  c.idle_timeout_ms = absl::GetFlag(FLAGS_dp_idle_timeout_s) * 1000;
  c.max_worker_groups = absl::GetFlag(FLAGS_dp_max_worker_groups);
  c.threads = threads;
  if (c.timeout_ms < 100 || c.timeout_ms > 3600000) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dp_timeout_ms=", c.timeout_ms, " must be in [100, 3600000]"));
  }
  if (c.bucket_bytes < (1 << 20) || c.bucket_bytes > (int64_t{1} << 30)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--dp_bucket_mb=", c.bucket_bytes >> 20, " must be in [1, 1024]"));
  }
  if (c.idle_timeout_ms < 1000 || c.max_worker_groups < 1) {
    return absl::InvalidArgumentError(
        "--dp_idle_timeout_s and --dp_max_worker_groups must be >= 1");
  }
  const std::string ca = absl::GetFlag(FLAGS_dp_peer_ca);
  if (!ca.empty()) {
    grpc::SslCredentialsOptions ssl;
    absl::StatusOr<std::string> roots = ReadFile("dp_peer_ca", ca);
    if (!roots.ok()) return roots.status();
    ssl.pem_root_certs = *roots;
    if (!tls_cert.empty()) {
      absl::StatusOr<std::string> chain = ReadFile("tls_cert", tls_cert);
      absl::StatusOr<std::string> key = ReadFile("tls_key", tls_key);
      if (!chain.ok()) return chain.status();
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *chain;
      ssl.pem_private_key = *key;
    }
    c.peer_credentials = grpc::SslCredentials(ssl);
  }
  return c;
}

}  // namespace qtrain::server
