// Operation results → response messages, and request batches → engine batches. Runs on any
// thread.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "qtrain/v1/trainer_service.pb.h"
#include "server/engine/trainer.h"
#include "server/ops/results.h"

namespace qtrain::rpc {

// Session description: step, parameters, spec, rules, unused rules, op plan.
// `id`: as the caller names the session.
void FillSession(const std::string& id, const ops::SessionSummary& summary, v1::Session* out);
// Every statistic with its derived static scale / zero point (or why there is none).
void FillQuantStats(const std::string& id, const ops::QuantStatsSnapshot& stats,
                    v1::QuantStats* out);
// The model a create or import request asks for: its `model`, or its `architecture` expanded
// (engine::ExpandArchitecture). InvalidArgument when both or neither are set, or for the
// architecture's errors.
absl::StatusOr<v1::ModelSpec> RequestedModel(bool has_model, const v1::ModelSpec& model,
                                             bool has_architecture,
                                             const v1::Architecture& architecture);
// Both tensors are required; errors of FromWire, naming batch.inputs / batch.targets.
absl::StatusOr<engine::Batch> BatchFromWire(const v1::Batch& wire, int64_t max_bytes);

}  // namespace qtrain::rpc
