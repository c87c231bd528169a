// The one place absl::Status becomes grpc::Status (style.md §10): every handler ends with it.
#pragma once

#include <grpcpp/support/status.h>

#include "absl/status/status.h"

namespace qtrain::rpc {

// Same canonical code (absl and gRPC share the numbering), same message.
grpc::Status ToGrpcStatus(const absl::Status& status);

}  // namespace qtrain::rpc
