// Reactors of the streaming RPCs (Train, Calibrate, Evaluate): one state machine for the three.
// Each reads requests on gRPC threads, parses, converts and validates them there, and hands the
// numeric work to the session (typed operations, ops/session_ops.h); results go back in order. At
// most `max_inflight_batches` batches are queued ahead of their results, so a slow session pushes
// back through gRPC flow control instead of buffering. A stream finishes only once every accepted
// batch has run, so executors never touch a deleted reactor. Reactors delete themselves in OnDone.
#pragma once

#include <atomic>
#include <cstdint>

#include <grpcpp/support/server_callback.h>

#include "qtrain/v1/trainer_service.pb.h"
#include "server/engine/memory_budget.h"
#include "server/ops/session_ops.h"
#include "server/rpc/metrics.h"
#include "server/rpc/service_access.h"

namespace qtrain::rpc {

// What a draining server (RunningServer::Shutdown) shares with the handlers. Owned by the server.
struct ServiceState {
  std::atomic<bool> draining{false};  // new work is refused with UNAVAILABLE
  std::atomic<int> streams{0};        // streaming calls not yet done
};

// UNAVAILABLE: the server drains before it stops; the client should retry elsewhere or later.
absl::Status DrainingError();

struct ServiceLimits {
  int64_t max_batch_bytes = int64_t{256} << 20;     // per tensor of a request
  int max_inflight_batches = 4;                     // per stream, ahead of the results
  int64_t max_checkpoint_bytes = int64_t{4} << 30;  // per uploaded checkpoint
  engine::MemoryBudget* budget = nullptr;           // host: uploads reserve from it; not owned
  const engine::DeviceBudgets* devices = nullptr;   // every device's (GetServerInfo); not owned
  ServiceState* state = nullptr;                    // not owned; null: never drains
  const ServiceAccess* access = nullptr;            // not owned; null: no auth, quotas, audit
};

// `gate` authorized the call (a refused one finishes at once with its error) and scopes its
// session ids; a stream holds one of its tenant's stream slots (tenants.h) while it runs.
// `sessions` runs the work (typed session operations); `metrics` (may be null) counts steps.
// Requests and responses travel as bytes (the service's methods are raw: wire_message.h).
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewTrainReactor(
    CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics);
grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewCalibrateReactor(
    CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics);
// `response` is gRPC's, valid until the reactor finishes.
grpc::ServerReadReactor<grpc::ByteBuffer>* NewEvaluateReactor(CallGate gate,
                                                              ops::SessionOps* sessions,
                                                              ServiceLimits limits,
                                                              grpc::ByteBuffer* response,
                                                              Metrics* metrics);

}  // namespace qtrain::rpc
