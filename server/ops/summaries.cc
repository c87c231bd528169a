#include "server/ops/summaries.h"

namespace qtrain::ops {

SessionSummary Summarize(const std::string& id, engine::Trainer& t) {
  SessionSummary s;
  s.id = id;
  s.step = t.step();
  s.parameters = t.model().num_parameters();
  s.non_trainable = t.model().num_state_elements();
  s.world_size = t.step_group() != nullptr ? t.step_group()->world_size() : 1;
  s.backend = t.backend_name();
  s.model = t.model().spec();
  if (t.model().rules() != nullptr) s.rules = t.model().rules()->source();
  s.optimizer = t.optimizer_config();
  s.unused_rules = t.UnusedRules();
  for (const auto& [rule, op] : t.model().Ops()) {
    const size_t colon = op.rfind(':');
    s.ops.push_back({op.substr(0, colon), op.substr(colon + 1), rule});
  }
  return s;
}

QuantStatsSnapshot SnapshotQuantStats(const engine::Trainer& t) {
  QuantStatsSnapshot snapshot;
  snapshot.step = t.step();
  for (const engine::QuantStatReport& r : t.QuantStatsReport()) {
    snapshot.entries.push_back({r.module_path, r.stat_name, *r.stat, r.qtype, r.params});
  }
  return snapshot;
}

std::string ModeOf(engine::Trainer& t) {
  std::string mode = "float";
  if (t.model().rules() == nullptr) return mode;
  for (const auto& [rule, op] : t.model().Ops()) {
    if (rule < 0) continue;
    const engine::Rule& r = t.model().rules()->rules()[rule];
    if (!r.weight_qtype) continue;
    if (r.bwd_qtype) return "qt";
    mode = "qat";
  }
  return mode;
}

}  // namespace qtrain::ops
