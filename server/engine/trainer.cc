#include "server/engine/trainer.h"

#include <algorithm>
#include <cmath>
#include <new>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/host_convert.h"
#include "kernels/srq_state.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {
namespace {

constexpr char kParams[] = "params/";
constexpr char kOpt[] = "opt/";
constexpr char kStats[] = "quant_stats/";
constexpr char kBatchStats[] = "batch_stats/";

absl::Status ZeroGrads(Backend& backend, const std::vector<Param*>& params) {
  for (Param* p : params) {
    if (p->accumulates) {
      QTRAIN_RETURN_IF_ERROR(backend.Fill(p->grad, 0.0f));
    }
  }
  return absl::OkStatus();
}

// A new tensor on the backend's device with host tensor t's values (never shared with t).
absl::StatusOr<Tensor> UploadCopy(Backend& backend, const Tensor& t) {
  QTRAIN_ASSIGN_OR_RETURN(Tensor d, backend.Allocate(t.dtype(), t.shape()));
  QTRAIN_RETURN_IF_ERROR(backend.CopyFromHost(t, d));
  return d;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const proto::ModelSpec& spec,
                                                         const proto::RuleSet& rules,
                                                         const proto::OptimizerConfig& optimizer,
                                                         uint64_t seed,
                                                         std::unique_ptr<Backend> backend) {
  auto t = std::unique_ptr<Trainer>(new Trainer());
  t->backend_ = std::move(backend);
  t->seed_ = seed;
  t->rng_ = std::make_unique<CounterRng>(seed, 0);
  QTRAIN_ASSIGN_OR_RETURN(t->footprint_, Model::Estimate(spec));
  QTRAIN_ASSIGN_OR_RETURN(t->model_, Model::Build(spec, seed));
  QTRAIN_ASSIGN_OR_RETURN(t->optimizer_, Optimizer::Create(optimizer));
  QTRAIN_RETURN_IF_ERROR(t->SetRules(rules));
  t->model_->root().SetInputGradNeeded(false);  // nothing consumes d loss / d inputs
  QTRAIN_RETURN_IF_ERROR(t->MoveToBackend());
  return t;
}

absl::Status Trainer::MoveToBackend() {
  // The model is built (initialised) on the host; a host backend keeps those tensors as they are.
  if (backend_->device().is_host()) return absl::OkStatus();
  for (Param* p : model_->params()) {
    QTRAIN_ASSIGN_OR_RETURN(p->value, backend_->ToDevice(p->value));
    QTRAIN_ASSIGN_OR_RETURN(p->grad, backend_->Zeros(p->value.shape()));
  }
  for (StateTensor* s : model_->state()) {
    QTRAIN_ASSIGN_OR_RETURN(s->value, backend_->ToDevice(s->value));
  }
  return absl::OkStatus();
}

absl::StatusOr<Batch> Trainer::OnDevice(const Batch& batch) {
  Batch b;
  QTRAIN_ASSIGN_OR_RETURN(b.inputs, backend_->ToDevice(batch.inputs));
  if (!batch.targets.empty()) {
    QTRAIN_ASSIGN_OR_RETURN(b.targets, backend_->ToDevice(batch.targets));
  }
  return b;
}

absl::Status Trainer::Validate(const Batch& batch) {
  QTRAIN_RETURN_IF_ERROR(model_->ValidateInputs(*backend_, batch.inputs));
  return ValidateTargets(*backend_, model_->spec().loss(), model_->output_shape(),
                         batch.inputs.dim(0), batch.targets);
}

absl::Status Trainer::ValidateBatch(const Batch& host_batch) {
  QTRAIN_ASSIGN_OR_RETURN(const Batch batch, OnDevice(host_batch));
  return Validate(batch);
}

absl::Status Trainer::SetRules(const proto::RuleSet& rules) {
  QTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<const CompiledRules> compiled,
                          CompiledRules::Create(rules));
  return model_->SetRules(std::move(compiled));
}

absl::StatusOr<StepContext> Trainer::Context(bool training, bool update_stats,
                                             const Tensor& inputs) {
  if (training || update_stats) ++generation_;  // weights or statistics may change
  StepContext ctx;
  const proto::InputSpec& input = model_->spec().input();
  if (input.has_pad_id() && inputs.dtype() == DType::kS32) {
    QTRAIN_ASSIGN_OR_RETURN(padding_, backend_->EqualMask(inputs, input.pad_id()));
    ctx.padding = &padding_;
  }
  ctx.backend = backend_.get();
  ctx.training = training;
  ctx.update_stats = update_stats;
  ctx.stats = &stats_;
  ctx.rng = rng_.get();
  ctx.step = static_cast<uint64_t>(step_);
  return ctx;
}

template <typename Body>
auto Trainer::Guarded(Body body) -> decltype(body()) {
  QuantStatsMap saved = stats_;
  // Non-trainable state (BatchNorm running statistics) is small; a failed step puts it back.
  std::vector<Tensor> saved_state;
  for (const StateTensor* s : model_->state()) {
    absl::StatusOr<Tensor> copy = backend_->Clone(s->value);
    if (!copy.ok()) return copy.status();
    saved_state.push_back(*std::move(copy));
  }
  auto restore = [&] {
    stats_ = std::move(saved);
    for (size_t i = 0; i < saved_state.size(); ++i) {
      model_->state()[i]->value = std::move(saved_state[i]);
    }
  };
  try {
    auto result = body();
    if (!result.ok()) restore();
    backend_->TrimCache();  // between steps: no primitive is in use
    return result;
  } catch (const std::bad_alloc&) {
    restore();
    backend_->TrimCache();
    return absl::ResourceExhaustedError(
        absl::StrCat("step ", step_,
                     ": out of memory (the server's memory budget is larger than the memory "
                     "it can allocate: lower qtrain-server --memory_budget_mb)"));
  }
}

absl::StatusOr<MemoryBudget::Lease> Trainer::ReserveStep(int64_t batch, bool training) {
  return MemoryBudget::Reserve(
      budget_, StepBytes(footprint_, batch, training),
      absl::StrCat("a ", training ? "training" : "forward", " step on ", batch, " examples"));
}

absl::StatusOr<StepResult> Trainer::TrainStep(const Batch& host_batch) {
  QTRAIN_ASSIGN_OR_RETURN(const Batch batch, OnDevice(host_batch));
  QTRAIN_RETURN_IF_ERROR(Validate(batch));
  if (group_ == nullptr || group_->world_size() == 1) {
    return Train(batch, /*collective=*/nullptr, 1.0f, 0);
  }
  // The step group splits the host batch (its ranks exchange host bytes).
  QTRAIN_ASSIGN_OR_RETURN(ShardedStep shard,
                          group_->Begin(*this, host_batch.inputs, host_batch.targets));
  absl::StatusOr<Batch> local = OnDevice({std::move(shard.inputs), std::move(shard.targets)});
  absl::StatusOr<StepResult> r =
      local.ok() ? Train(*local, shard.collective, shard.shard_weight, group_->bucket_bytes())
                 : absl::StatusOr<StepResult>(local.status());
  group_->End(*this, r.status());
  if (r.ok()) r->examples = batch.inputs.dim(0);
  return r;
}

absl::StatusOr<StepResult> Trainer::TrainShard(const Batch& host_shard, Collective& collective,
                                               float shard_weight, int64_t bucket_bytes) {
  QTRAIN_ASSIGN_OR_RETURN(const Batch shard, OnDevice(host_shard));
  QTRAIN_RETURN_IF_ERROR(Validate(shard));
  return Train(shard, &collective, shard_weight, bucket_bytes);
}

absl::StatusOr<StepResult> Trainer::Train(const Batch& batch, Collective* collective,
                                          float shard_weight, int64_t bucket_bytes) {
  QTRAIN_ASSIGN_OR_RETURN(MemoryBudget::Lease lease, ReserveStep(batch.inputs.dim(0), true));
  return Guarded([&]() -> absl::StatusOr<StepResult> {
    QTRAIN_RETURN_IF_ERROR(ZeroGrads(*backend_, model_->params()));
    QTRAIN_ASSIGN_OR_RETURN(StepContext ctx,
                            Context(/*training=*/true, /*update_stats=*/true, batch.inputs));
    if (collective != nullptr) {
      ctx.collective = collective;
      ctx.shard_weight = shard_weight;
      if (collective->rank() != 0) {  // dropout masks of their own; rank 0 keeps the session's
        if (rank_rng_ == nullptr) {
          rank_rng_ =
              std::make_unique<CounterRng>(seed_, static_cast<uint64_t>(collective->rank()));
        }
        ctx.rng = rank_rng_.get();
      }
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor out, model_->root().Forward(ctx, batch.inputs));
    QTRAIN_ASSIGN_OR_RETURN(LossResult loss,
                            ComputeLoss(*backend_, model_->spec().loss(), out, batch.targets,
                                        /*want_grad=*/true, ctx.padding));
    double loss_value = loss.loss, accuracy = loss.accuracy;
    int64_t counted = loss.count;
    std::optional<GradReducer> reducer;
    if (collective != nullptr) {
      // The global loss averages over every rank's counted examples or tokens: each rank's
      // gradient enters the sum weighted by its share of them.
      const double n = static_cast<double>(loss.count);
      double sums[3] = {n > 0 ? loss.loss * n : 0.0, n > 0 ? loss.accuracy * n : 0.0, n};
      QTRAIN_RETURN_IF_ERROR(collective->AllReduceSum(absl::MakeSpan(sums)));
      counted = static_cast<int64_t>(sums[2]);
      loss_value = sums[2] > 0 ? sums[0] / sums[2] : 0.0;
      if (accuracy >= 0) accuracy = sums[2] > 0 ? sums[1] / sums[2] : 0.0;
      // The weight goes into d loss / d output (small), so the backward produces weighted
      // gradients and the all-reduce only sums.
      const float grad_weight = sums[2] > 0 ? static_cast<float>(n / sums[2]) : 0.0f;
      QTRAIN_RETURN_IF_ERROR(backend_->Scale(loss.grad, grad_weight));
      reducer.emplace(*collective, model_->params(), bucket_bytes);
      ctx.reducer = &*reducer;
    }
    QTRAIN_RETURN_IF_ERROR(model_->root().Backward(ctx, loss.grad).status());
    if (reducer) {
      QTRAIN_RETURN_IF_ERROR(reducer->Finish());
      reduce_times_ = reducer->times();
      // Running statistics (BatchNorm): each rank normalised with its shard's batch statistics
      // (no synchronised batch norm); the running values are averaged, weighted by examples.
      for (StateTensor* st : model_->state()) {
        QTRAIN_RETURN_IF_ERROR(collective->AllReduceSum({&st->value}, shard_weight));
      }
    }
    // Every collective is done: from here on the ranks compute the same update from the same sums.
    QTRAIN_ASSIGN_OR_RETURN(const float grad_norm, GlobalGradNorm(*backend_, model_->params()));
    if (!std::isfinite(grad_norm)) {
      return absl::FailedPreconditionError(absl::StrCat(
          "step ", step_, ": gradients are not finite (loss ", loss_value,
          "); the update was skipped — lower the learning rate or enable clip_global_norm"));
    }
    QTRAIN_ASSIGN_OR_RETURN(const Optimizer::StepInfo info,
                            optimizer_->Apply(*backend_, model_->params(), step_, grad_norm));
    ++step_;
    StepResult r;
    r.step = step_;
    r.loss = loss_value;
    r.accuracy = accuracy;
    r.grad_norm = info.grad_norm;
    r.learning_rate = info.learning_rate;
    r.examples = batch.inputs.dim(0);
    r.counted = counted;
    return r;
  });
}

absl::StatusOr<StepResult> Trainer::EvalStep(const Batch& host_batch, bool update_stats) {
  QTRAIN_ASSIGN_OR_RETURN(const Batch batch, OnDevice(host_batch));
  QTRAIN_RETURN_IF_ERROR(Validate(batch));
  QTRAIN_ASSIGN_OR_RETURN(MemoryBudget::Lease lease, ReserveStep(batch.inputs.dim(0), false));
  return Guarded([&]() -> absl::StatusOr<StepResult> {
    QTRAIN_ASSIGN_OR_RETURN(StepContext ctx,
                            Context(/*training=*/false, update_stats, batch.inputs));
    QTRAIN_ASSIGN_OR_RETURN(Tensor out, model_->root().Forward(ctx, batch.inputs));
    QTRAIN_ASSIGN_OR_RETURN(LossResult loss,
                            ComputeLoss(*backend_, model_->spec().loss(), out, batch.targets,
                                        /*want_grad=*/false, ctx.padding));
    StepResult r;
    r.step = step_;
    r.loss = loss.loss;
    r.accuracy = loss.accuracy;
    r.examples = batch.inputs.dim(0);
    r.counted = loss.count;
    return r;
  });
}

absl::StatusOr<EvalMetrics> Trainer::EvaluateUnder(const proto::RuleSet& rules,
                                                   const std::vector<Batch>& batches) {
  if (batches.empty()) return absl::InvalidArgumentError("no batches to evaluate");
  QTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<const CompiledRules> compiled,
                          CompiledRules::Create(rules));
  std::shared_ptr<const CompiledRules> saved_rules = model_->shared_rules();
  QTRAIN_RETURN_IF_ERROR(model_->SetRules(std::move(compiled)));
  // Planning a static op for the first time adds an empty statistic, and switching calibrators
  // resets one: both are undone.
  QuantStatsMap saved_stats = stats_;
  EvalMetrics m;
  double loss_sum = 0, accuracy_sum = 0;
  int64_t counted = 0;
  absl::Status status;
  for (size_t i = 0; i < batches.size() && status.ok(); ++i) {
    absl::StatusOr<StepResult> r = EvalStep(batches[i], /*update_stats=*/false);
    if (!r.ok()) {
      status =
          absl::Status(r.status().code(), absl::StrCat("batch ", i, ": ", r.status().message()));
      break;
    }
    m.examples += r->examples;
    if (r->counted == 0) continue;  // every target ignored: its mean is no number
    counted += r->counted;
    loss_sum += r->loss * static_cast<double>(r->counted);
    accuracy_sum += r->accuracy * static_cast<double>(r->counted);
  }
  stats_ = std::move(saved_stats);
  absl::Status restored = model_->SetRules(std::move(saved_rules));
  QTRAIN_CHECK(restored.ok());  // the plan the model had a moment ago
  if (!status.ok()) return status;
  if (counted > 0) {  // else every target was ignore_index: nothing to average
    m.loss = loss_sum / static_cast<double>(counted);
    m.accuracy = accuracy_sum / static_cast<double>(counted);
  }
  return m;
}

absl::StatusOr<Tensor> Trainer::Predict(const Tensor& host_inputs) {
  QTRAIN_ASSIGN_OR_RETURN(const Tensor inputs, backend_->ToDevice(host_inputs));
  QTRAIN_RETURN_IF_ERROR(model_->ValidateInputs(*backend_, inputs));
  QTRAIN_ASSIGN_OR_RETURN(MemoryBudget::Lease lease, ReserveStep(inputs.dim(0), false));
  return Guarded([&]() -> absl::StatusOr<Tensor> {
    QTRAIN_ASSIGN_OR_RETURN(StepContext ctx,
                            Context(/*training=*/false, /*update_stats=*/false, inputs));
    QTRAIN_ASSIGN_OR_RETURN(Tensor out, model_->root().Forward(ctx, inputs));
    return backend_->ToHost(std::move(out));
  });
}

absl::Status Trainer::CalibrateStep(const Tensor& host_inputs) {
  QTRAIN_ASSIGN_OR_RETURN(const Tensor inputs, backend_->ToDevice(host_inputs));
  QTRAIN_RETURN_IF_ERROR(model_->ValidateInputs(*backend_, inputs));
  QTRAIN_ASSIGN_OR_RETURN(MemoryBudget::Lease lease, ReserveStep(inputs.dim(0), false));
  const auto observed = [](const QuantStatsMap& m) {
    int64_t n = 0;
    for (const auto& [key, stat] : m) n += stat.count;
    return n;
  };
  const int64_t before = observed(stats_);
  return Guarded([&]() -> absl::Status {
    QTRAIN_ASSIGN_OR_RETURN(StepContext ctx,
                            Context(/*training=*/false, /*update_stats=*/true, inputs));
    QTRAIN_RETURN_IF_ERROR(model_->root().Forward(ctx, inputs).status());
    // Only ops under an act_static_scale rule observe their operands: if none did, the pass
    // calibrated nothing, which is a mistake worth naming rather than an empty result.
    if (observed(stats_) == before) {
      return absl::FailedPreconditionError(
          "calibration has nothing to collect: no op is quantized by a rule with "
          "\"act_static_scale\": true; update the rules first (e.g. {\"weight_qtype\": \"int8\", "
          "\"act_qtype\": \"int8\", \"act_static_scale\": true})");
    }
    return absl::OkStatus();
  });
}

std::vector<QuantStatReport> Trainer::QuantStatsReport() const {
  std::map<std::string, int> op_rules;  // "path:op_id" → rule index
  for (const auto& [rule, op] : model_->Ops()) {
    op_rules[op] = rule;
  }
  std::vector<QuantStatReport> out;
  for (const auto& [key, stat] : stats_) {
    QuantStatReport r;
    r.module_path = key.first;
    r.stat_name = key.second;
    r.stat = &stat;
    const std::string op_id = key.second.substr(0, key.second.rfind('_'));
    auto it = op_rules.find(key.first + ":" + op_id);
    const Rule* rule = it != op_rules.end() && it->second >= 0 && model_->rules()
                           ? &model_->rules()->rules()[it->second]
                           : nullptr;
    if (rule == nullptr || !rule->act_qtype) {
      r.params = absl::NotFoundError(
          absl::StrCat("no rule quantizes the activations of ", key.first, ":", op_id, " now"));
    } else {
      r.qtype = rule->act_qtype;
      absl::StatusOr<Calibration> cal = SrqCalibration(stat, *rule->act_qtype);
      r.params = cal.ok() ? ComputeQuantParams(*cal, *rule->act_qtype)
                          : absl::StatusOr<QuantParams>(cal.status());
    }
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<std::map<std::string, Tensor>> Trainer::ExportState() {
  std::map<std::string, Tensor> out;
  for (const Param* p : model_->params()) {
    QTRAIN_ASSIGN_OR_RETURN(out[kParams + p->name], backend_->HostCopy(p->value));
  }
  QTRAIN_ASSIGN_OR_RETURN(const auto slots, optimizer_->State(*backend_, model_->params()));
  for (const auto& [name, tensor] : slots) {
    QTRAIN_ASSIGN_OR_RETURN(out[kOpt + name], backend_->HostCopy(*tensor));
  }
  for (const StateTensor* s : model_->state()) {
    QTRAIN_ASSIGN_OR_RETURN(out[kBatchStats + s->name], backend_->HostCopy(s->value));
  }
  for (const auto& [key, stat] : stats_) {
    ExportSrqStat(stat, absl::StrCat(kStats, key.first, "/", key.second, "/"), &out);
  }
  return out;
}

absl::Status Trainer::ImportState(const std::map<std::string, Tensor>& state, int64_t step) {
  auto find = [&](const std::string& key, const Shape& shape) -> absl::StatusOr<const Tensor*> {
    auto it = state.find(key);
    if (it == state.end()) {
      return absl::InvalidArgumentError(absl::StrCat("state: tensor \"", key, "\" is missing"));
    }
    if (it->second.dtype() != DType::kF32 || it->second.shape() != shape) {
      return absl::InvalidArgumentError(absl::StrCat(
          "state: tensor \"", key, "\" is ", DTypeName(it->second.dtype()), " ",
          ShapeString(it->second.shape()), ", the model needs f32 ", ShapeString(shape)));
    }
    // A NaN or infinite weight or slot would poison every later step.
    if (absl::Status s = CheckFiniteHost(it->second); !s.ok()) {  // "element 3 is nan"
      return absl::InvalidArgumentError(
          absl::StrCat("state: tensor \"", key, "\" ", s.message(), " (weights must be finite)"));
    }
    return &it->second;
  };
  if (step < 0) {
    return absl::InvalidArgumentError(absl::StrCat("state: step ", step, " < 0"));
  }
  // Validate everything first, then copy: nothing changes on error.
  std::vector<std::pair<Tensor*, const Tensor*>> copies;
  for (Param* p : model_->params()) {
    QTRAIN_ASSIGN_OR_RETURN(const Tensor* t, find(kParams + p->name, p->value.shape()));
    copies.emplace_back(&p->value, t);
  }
  for (StateTensor* s : model_->state()) {
    QTRAIN_ASSIGN_OR_RETURN(const Tensor* t, find(kBatchStats + s->name, s->value.shape()));
    copies.emplace_back(&s->value, t);
  }
  QTRAIN_ASSIGN_OR_RETURN(const auto slots, optimizer_->State(*backend_, model_->params()));
  for (const auto& [name, tensor] : slots) {
    if (state.count(kOpt + name)) {
      QTRAIN_ASSIGN_OR_RETURN(const Tensor* t, find(kOpt + name, tensor->shape()));
      copies.emplace_back(tensor, t);
    }
  }
  QuantStatsMap stats;
  for (const auto& [key, tensor] : state) {
    if (key.rfind(kStats, 0) != 0 || key.size() < 6 || key.substr(key.size() - 6) != "/count") {
      continue;
    }
    const std::string base = key.substr(0, key.size() - 6);  // quant_stats/<module>/<stat>
    const std::string rest = base.substr(sizeof(kStats) - 1);
    const size_t slash = rest.rfind('/');
    if (slash == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("state: \"", key, "\" must name a module and a statistic"));
    }
    QTRAIN_ASSIGN_OR_RETURN(SrqStat stat, ImportSrqStat(state, base, tensor));
    stats[{rest.substr(0, slash), rest.substr(slash + 1)}] = std::move(stat);
  }
  std::vector<Tensor> uploaded;  // every copy made before any tensor is replaced
  for (const auto& [dst, src] : copies) {
    QTRAIN_ASSIGN_OR_RETURN(uploaded.emplace_back(), UploadCopy(*backend_, *src));
  }
  for (size_t i = 0; i < copies.size(); ++i) {
    *copies[i].first = std::move(uploaded[i]);
  }
  stats_ = std::move(stats);
  step_ = step;
  ++generation_;
  return absl::OkStatus();
}

}  // namespace qtrain::engine
