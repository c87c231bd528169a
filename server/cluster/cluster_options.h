// A server's data-parallel configuration (qtrain-server's --dp_* flags; docs/scaling.md).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/security/credentials.h>

namespace qtrain::cluster {

struct ClusterOptions {
  // Where ranks meet: "file:///shared/dir" or "redis://host:port"; empty: no data parallelism
  // (this server neither leads groups nor joins them).
  std::string rendezvous;
  // The gRPC addresses of the servers that may serve as this one's worker ranks, in rank order.
  std::vector<std::string> peers;
  std::string secret;                   // the cluster secret (the contents of --dp_secret_file)
  std::string bind_host = "127.0.0.1";  // the address other ranks reach this server's ranks at
  int64_t timeout_ms = 30000;           // forming a group, and every collective
  int64_t bucket_bytes = int64_t{25} << 20;
  int64_t idle_timeout_ms = 600000;  // a worker rank leaves after this long without a message
  int max_worker_groups = 4;         // groups this server serves as a worker at once
  int threads = 1;                   // OpenMP threads of a worker rank
  int64_t max_message_bytes = int64_t{4} << 30;
  // How this server calls its peers' Cluster service (insecure, or TLS with a CA).
  std::shared_ptr<grpc::ChannelCredentials> peer_credentials;
  bool enabled() const { return !rendezvous.empty(); }
};

}  // namespace qtrain::cluster
