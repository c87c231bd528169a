// qtrain-server's --dp_* flags (data-parallel groups, docs/scaling.md) as ClusterOptions.
#pragma once

#include "absl/status/statusor.h"
#include "server/cluster/cluster_options.h"

namespace qtrain::server {

// Reads the flags (and the secret and CA files they name). InvalidArgument naming the flag.
// `threads`: the worker ranks' OpenMP threads (--threads); `tls_cert` / `tls_key`: this
// server's certificate, presented to peers that require client certificates.
absl::StatusOr<cluster::ClusterOptions> ClusterOptionsFromFlags(int threads,
                                                                const std::string& tls_cert,
                                                                const std::string& tls_key);

}  // namespace qtrain::server
