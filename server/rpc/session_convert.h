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
// The model a create or import request asks for: its `model`, or its `architecture` expanded
// (engine::ExpandArchitecture). InvalidArgument when both or neither are set, or for the
// architecture's errors.
absl::StatusOr<v1::ModelSpec> RequestedModel(bool has_model, const v1::ModelSpec& model,
                                             bool has_architecture,
                                             const v1::Architecture& architecture);
// Both tensors are required; errors of FromWire, naming batch.inputs / batch.targets.
absl::StatusOr<engine::Batch> BatchFromWire(const v1::Batch& wire, int64_t max_bytes);

}  // namespace qtrain::rpc
