#include "server/rpc/session_convert.h"

#include "server/engine/architectures.h"

#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {

void FillSession(const std::string& id, const ops::SessionSummary& summary, v1::Session* out) {
  out->set_session_id(id);
  out->set_step(summary.step);
  out->set_parameters(summary.parameters);
  out->set_non_trainable(summary.non_trainable);
  out->set_world_size(summary.world_size);
  out->set_backend(summary.backend);
  *out->mutable_model() = summary.model;
  *out->mutable_rules() = summary.rules;
  *out->mutable_optimizer() = summary.optimizer;
  for (int index : summary.unused_rules) out->add_unused_rules(index);
  for (const ops::SessionSummary::Op& op : summary.ops) {
    v1::QuantizedOp* q = out->add_ops();
    q->set_module_path(op.module_path);
    q->set_op_id(op.op_id);
    q->set_rule_index(op.rule_index);
  }
}

void FillQuantStats(const std::string& id, const ops::QuantStatsSnapshot& stats,
                    v1::QuantStats* response) {
  response->set_session_id(id);
  response->set_step(stats.step);
  for (const ops::QuantStatEntry& r : stats.entries) {
    v1::QuantStat* s = response->add_stats();
    s->set_module_path(r.module_path);
    s->set_name(r.stat_name);
    s->set_count(r.stat.count);
    if (r.stat.symmetric) {
      *s->mutable_sum_of_absmax() = ToWire(r.stat.sum_of_absmax);
    } else {
      *s->mutable_sum_of_min() = ToWire(r.stat.sum_of_min);
      *s->mutable_sum_of_max() = ToWire(r.stat.sum_of_max);
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
