// Copies of a session's state for the operations' results (results.h). Internal to server/ops;
// run on the session's executor.
#pragma once

#include <string>

#include "server/engine/trainer.h"
#include "server/ops/results.h"

namespace qtrain::ops {

SessionSummary Summarize(const std::string& id, engine::Trainer& t);
QuantStatsSnapshot SnapshotQuantStats(const engine::Trainer& t);
// "float", "qat" or "qt": how the session's rules run its ops now.
std::string ModeOf(engine::Trainer& t);

}  // namespace qtrain::ops
