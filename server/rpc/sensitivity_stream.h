// The AnalyzeSensitivity stream (engine/sensitivity.h over the wire): held-out batches in, one
// progress message per evaluation out, the report last. The batches are validated against the
// model as they arrive and held (ops/sensitivity_job.h) until the analysis ends; each evaluation
// is its own task on the session's executor, so other calls on the session interleave and a
// cancellation stops between them.
#pragma once

#include <cstdint>

#include <grpcpp/support/server_callback.h>

#include "server/ops/session_ops.h"
#include "server/rpc/metrics.h"
#include "server/rpc/service_access.h"
#include "server/rpc/stream_reactors.h"

namespace qtrain::rpc {

// Arguments as NewTrainReactor's.
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewSensitivityReactor(
    CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics);

}  // namespace qtrain::rpc
