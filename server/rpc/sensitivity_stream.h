// The AnalyzeSensitivity stream (engine/sensitivity.h over the wire): held-out batches in, one
// progress message per evaluation out, the report last. The batches are validated against the
// model as they arrive and held (reserved from the memory budget, at most
// kMaxHeldOutBytes) until the analysis ends; each evaluation is its own task on the session's
// executor, so other calls on the session interleave and a cancellation stops between them.
#pragma once

#include <cstdint>

#include <grpcpp/support/server_callback.h>

#include "server/engine/session.h"
#include "server/rpc/metrics.h"
#include "server/rpc/service_access.h"
#include "server/rpc/stream_reactors.h"

namespace qtrain::rpc {

inline constexpr int64_t kMaxHeldOutBytes = int64_t{2} << 30;

// Arguments as NewTrainReactor's.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewSensitivityReactor(
    CallGate gate, engine::SessionManager* sessions, ServiceLimits limits, Metrics* metrics);

}  // namespace qtrain::rpc
