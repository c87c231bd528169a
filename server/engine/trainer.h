// Trainer: the state of one training session — model (float master weights), optimizer state,
// quant_stats, step counter and seed — and the steps that change it: train, evaluate, forward
// (predict) and calibrate (numerics.md §5–6).
//
// Not thread-safe: a session's executor runs one call at a time. Every call validates its whole
// request before touching state, and restores quant_stats if a step fails midway, so a bad
// request never changes the session.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "server/engine/collective.h"
#include "server/engine/config.h"
#include "server/engine/grad_reducer.h"
#include "server/engine/loss.h"
#include "server/engine/memory_budget.h"
#include "server/engine/model.h"
#include "server/engine/optimizer.h"
#include "server/engine/step_group.h"

namespace qtrain::engine {

struct Batch {
  Tensor inputs;   // (N, input shape...), f32 or int32 tokens
  Tensor targets;  // int32 labels (cross-entropy) or f32 (MSE)
};

// One quant_stats entry with the static scale it implies (numerics.md §6).
struct QuantStatReport {
  std::string module_path;
  std::string stat_name;          // "<op_id>_lhs" / "<op_id>_rhs"
  const SrqStat* stat = nullptr;  // owned by the Trainer; valid until its next step
  std::optional<QType> qtype;     // act_qtype of the rule that plans the op, if any
  // scale / zero point from sum / count with the rule's act calibration; FailedPrecondition when
  // count is 0, NotFound when no rule quantizes the op any more.
  absl::StatusOr<QuantParams> params = absl::NotFoundError("not computed");
};

// Means over a set of batches, weighted by what each batch's loss counted (examples, or tokens
// that are not ignore_index), so that they equal the metrics of one batch holding them all.
struct EvalMetrics {
  double loss = 0;
  double accuracy = -1;  // -1 when the loss has none
  int64_t examples = 0;
};

struct StepResult {
  int64_t step = 0;  // the session's step count after this call
  double loss = 0;
  double accuracy = -1;  // -1 when the loss has none (MSE)
  float grad_norm = 0;   // training steps only
  float learning_rate = 0;
  int64_t examples = 0;
  int64_t counted = 0;  // examples or tokens the loss and accuracy average over
};

class Trainer {
 public:
  // Builds the model, compiles the rules, creates the optimizer. Errors: those of Model::Build,
  // CompiledRules::Create / Plan and Optimizer::Create, unchanged.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const proto::ModelSpec& spec,
                                                         const proto::RuleSet& rules,
                                                         const proto::OptimizerConfig& optimizer,
                                                         uint64_t seed,
                                                         std::unique_ptr<Backend> backend);

  // Steps reserve their estimated activations (StepBytes) from `budget` while they run; null:
  // unlimited. The budget must outlive the trainer.
  void set_memory_budget(MemoryBudget* budget) { budget_ = budget; }
  const ModelFootprint& footprint() const { return footprint_; }
  // The name of the backend its ops run on ("onednn", "reference").
  std::string backend_name() const { return backend_->name(); }
  // The backend itself, for ops run on this trainer's executor.
  Backend& backend() { return *backend_; }
  // A host tensor with the values of t (a parameter, a running statistic): t itself on a host
  // backend, else a copy — how exports read the model. The backend's errors.
  absl::StatusOr<Tensor> OnHost(const Tensor& t) { return backend_->ToHost(t.Share()); }

  // Batches, inputs and results are host tensors; the trainer moves them to and from the
  // backend's device, where the model's parameters, gradients and optimizer slots live.
  //
  // Forward, loss, backward, optimizer update, quant_stats update. InvalidArgument for a bad
  // batch; FailedPrecondition when the gradients are not finite (the update is skipped).
  // Every step below: ResourceExhausted when the batch does not fit the memory budget or an
  // allocation fails; nothing changes then.
  absl::StatusOr<StepResult> TrainStep(const Batch& batch);
  // Data-parallel sessions: TrainStep splits each batch over `group`'s ranks (step_group.h) and
  // fails Unavailable, with nothing changed, when a rank cannot be reached. Null: one process.
  void set_step_group(std::unique_ptr<StepGroup> group) { group_ = std::move(group); }
  StepGroup* step_group() const { return group_.get(); }
  // One rank's part of a data-parallel step: forward and backward on `shard` (`shard_weight` of
  // the global batch's examples), the loss's counts, gradients (in buckets of `bucket_bytes`
  // while the backward runs), SRQ statistics and BatchNorm running statistics summed across
  // `collective`, then the same update on every rank. The result's loss and accuracy are the
  // global batch's. Errors as TrainStep's; Unavailable when a rank has gone, and then no update
  // is applied here. Worker ranks call it directly.
  absl::StatusOr<StepResult> TrainShard(const Batch& shard, Collective& collective,
                                        float shard_weight, int64_t bucket_bytes);
  // What the last data-parallel step's gradient reduction cost.
  const ReduceTimes& last_reduce_times() const { return reduce_times_; }

  // The checks TrainStep and EvalStep make of a batch (its inputs, then its targets against the
  // model), without running anything: for work that keeps batches for later. InvalidArgument
  // naming the field.
  absl::Status ValidateBatch(const Batch& batch);
  // Loss and accuracy without an update; quant_stats change only when `update_stats`.
  absl::StatusOr<StepResult> EvalStep(const Batch& batch, bool update_stats = false);
  // EvalStep over every batch under other `rules`, without changing the session: its rules and
  // quant_stats are restored afterwards (a static scale's statistics are read, never updated),
  // also on error. Errors: CompiledRules::Create's and Model::SetRules' for the rules (nothing
  // evaluated), EvalStep's naming the batch's index; InvalidArgument for no batches.
  absl::StatusOr<EvalMetrics> EvaluateUnder(const proto::RuleSet& rules,
                                            const std::vector<Batch>& batches);
  // The model's outputs (logits) for a batch, on the host.
  absl::StatusOr<Tensor> Predict(const Tensor& inputs);
  // Forward only, updating quant_stats (standalone calibration). FailedPrecondition, with the
  // stats unchanged, when no op is quantized by a rule with act_static_scale (nothing to collect).
  absl::Status CalibrateStep(const Tensor& inputs);

  // Replaces the rules between steps; weights, optimizer state and stats carry over. On error
  // the old rules stay.
  absl::Status SetRules(const proto::RuleSet& rules);
  std::vector<int> UnusedRules() const { return model_->UnusedRules(); }

  const QuantStatsMap& quant_stats() const { return stats_; }
  // Every statistic with its derived scale and zero point, sorted by (module path, name).
  std::vector<QuantStatReport> QuantStatsReport() const;
  int64_t step() const { return step_; }
  // Changes whenever the weights or quant_stats may have changed (a training, calibrating or
  // stats-updating step, an import): work spread over several tasks checks it stayed put.
  uint64_t generation() const { return generation_; }
  uint64_t seed() const { return seed_; }
  Model& model() { return *model_; }
  const proto::OptimizerConfig& optimizer_config() const { return optimizer_->config(); }

  // The whole numeric state as named f32/s32 tensors: "params/<name>", "opt/<name>/<slot>",
  // "batch_stats/<name>" (non-trainable state, StateTensor),
  // "quant_stats/<module path>/<stat>/{count,sum_of_absmax,sum_of_min,sum_of_max}": host copies.
  // The backend's errors when a copy fails.
  absl::StatusOr<std::map<std::string, Tensor>> ExportState();
  // Loads a state dict (e.g. from a checkpoint of a float, QAT or QT session): every parameter
  // and every non-trainable state tensor must be present with its shape; optimizer slots and
  // quant_stats are loaded when present. InvalidArgument naming the tensor otherwise; nothing
  // changes on error.
  absl::Status ImportState(const std::map<std::string, Tensor>& state, int64_t step);

 private:
  // Parameters, gradients and running statistics onto the backend's device (after Build).
  absl::Status MoveToBackend();
  // The batch's tensors on the backend's device (shared, not copied, on a host backend).
  absl::StatusOr<Batch> OnDevice(const Batch& batch);
  // ValidateBatch of a batch already on the device.
  absl::Status Validate(const Batch& batch);
  Trainer() = default;
  // The context of a step on `inputs`; flags the padding of token inputs when the spec has a
  // pad_id (in padding_, valid until the next call).
  absl::StatusOr<StepContext> Context(bool training, bool update_stats, const Tensor& inputs);
  absl::StatusOr<MemoryBudget::Lease> ReserveStep(int64_t batch, bool training);
  // TrainStep's body on validated data; with `collective`, a data-parallel rank's (TrainShard).
  absl::StatusOr<StepResult> Train(const Batch& batch, Collective* collective, float shard_weight,
                                   int64_t bucket_bytes);
  // Runs a step's `body`: on an error, or a failed allocation (ResourceExhausted: the budget's
  // estimates err high, but no request may end the process), quant_stats are restored.
  template <typename Body>
  auto Guarded(Body body) -> decltype(body());

  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<Optimizer> optimizer_;
  QuantStatsMap stats_;
  uint64_t seed_ = 0;
  ModelFootprint footprint_;
  MemoryBudget* budget_ = nullptr;
  std::unique_ptr<CounterRng> rng_;
  int64_t step_ = 0;
  uint64_t generation_ = 0;
  Tensor padding_;  // Context's padding flags (u8)
  std::unique_ptr<StepGroup> group_;
  std::unique_ptr<CounterRng> rank_rng_;  // a worker rank's dropout / noise stream
  ReduceTimes reduce_times_;
};

}  // namespace qtrain::engine
