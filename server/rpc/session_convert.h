// Engine state ⇄ response messages, and request batches → engine batches. Runs on a session's
// executor (the Fill* functions read the Trainer) or on gRPC threads (BatchFromWire).
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "qtrain/v1/trainer_service.pb.h"
#include "server/engine/trainer.h"

namespace qtrain::rpc {

// Session description: step, parameters, spec, rules, unused rules, op plan.
void FillSession(const std::string& id, engine::Trainer& t, v1::Session* out);
// Every statistic with its derived static scale / zero point (or why there is none).
void FillQuantStats(const std::string& id, engine::Trainer& t, v1::QuantStats* out);
// Both tensors are required; errors of FromWire, naming batch.inputs / batch.targets.
absl::StatusOr<engine::Batch> BatchFromWire(const v1::Batch& wire, int64_t max_bytes);

}  // namespace qtrain::rpc
