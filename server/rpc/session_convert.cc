#include "server/rpc/session_convert.h"

#include "server/engine/architectures.h"

#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {

using engine::Trainer;

void FillSession(const std::string& id, Trainer& t, v1::Session* out) {
  out->set_session_id(id);
  out->set_step(t.step());
  out->set_parameters(t.model().num_parameters());
  out->set_non_trainable(t.model().num_state_elements());
  out->set_world_size(t.step_group() != nullptr ? t.step_group()->world_size() : 1);
  out->set_backend(t.backend_name());
  *out->mutable_model() = t.model().spec();
  if (t.model().rules() != nullptr) *out->mutable_rules() = t.model().rules()->source();
  *out->mutable_optimizer() = t.optimizer_config();
  for (int index : t.UnusedRules()) out->add_unused_rules(index);
  for (const auto& [rule, op] : t.model().Ops()) {
    v1::QuantizedOp* q = out->add_ops();
    const size_t colon = op.rfind(':');
    q->set_module_path(op.substr(0, colon));
    q->set_op_id(op.substr(colon + 1));
    q->set_rule_index(rule);
  }
}

void FillQuantStats(const std::string& id, engine::Trainer& t, v1::QuantStats* response) {
  response->set_session_id(id);
  response->set_step(t.step());
  for (const engine::QuantStatReport& r : t.QuantStatsReport()) {
    v1::QuantStat* s = response->add_stats();
    s->set_module_path(r.module_path);
    s->set_name(r.stat_name);
    s->set_count(r.stat->count);
    if (r.stat->symmetric) {
      *s->mutable_sum_of_absmax() = ToWire(r.stat->sum_of_absmax);
    } else {
      *s->mutable_sum_of_min() = ToWire(r.stat->sum_of_min);
      *s->mutable_sum_of_max() = ToWire(r.stat->sum_of_max);
    }
    if (r.qtype) s->set_qtype(QTypeName(*r.qtype));
    if (r.params.ok()) {
      *s->mutable_scale() = ToWire(r.params->scale);
      if (!r.params->symmetric()) *s->mutable_zero_point() = ToWire(r.params->zero_point);
    } else {
      s->set_scale_error(std::string(r.params.status().message()));
    }
  }
}

absl::StatusOr<v1::ModelSpec> RequestedModel(bool has_model, const v1::ModelSpec& model,
                                             bool has_architecture,
                                             const v1::Architecture& architecture) {
  if (has_model && has_architecture) {
    return absl::InvalidArgumentError(
        "set model (a spec) or architecture (a named one, e.g. torchvision:resnet18), not both");
  }
  if (has_architecture) return engine::ExpandArchitecture(architecture);
  if (!has_model) {
    return absl::InvalidArgumentError(
        "the request must set model (the spec) or architecture (a named one, e.g. "
        "torchvision:resnet18)");
  }
  return model;
}

absl::StatusOr<engine::Batch> BatchFromWire(const v1::Batch& wire, int64_t max_bytes) {
  engine::Batch b;
  if (!wire.has_inputs() || !wire.has_targets()) {
    return absl::InvalidArgumentError("batch: inputs and targets are both required");
  }
  absl::StatusOr<Tensor> inputs = InputsFromWire(wire.inputs(), "batch.inputs", max_bytes);
  if (!inputs.ok()) return inputs.status();
  absl::StatusOr<Tensor> targets = FromWire(wire.targets(), "batch.targets", max_bytes);
  if (!targets.ok()) return targets.status();
  b.inputs = std::move(*inputs);
  b.targets = std::move(*targets);
  return b;
}

}  // namespace qtrain::rpc
