#include "server/ops/session_ops.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/ops/summaries.h"
#include "server/store/checkpoint_io.h"
#include "server/store/export_onnx.h"
#include "server/store/export_quantized.h"
#include "server/store/import_weights.h"
#include "server/store/session_checkpoint.h"

namespace qtrain::ops {
namespace {

using engine::Trainer;
using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

}  // namespace

// Every operation's task: its result, or its failed allocation as ResourceExhausted, always goes
// to `done` (a task that threw past it would leave its caller waiting for ever).
template <typename T, typename Fn>
absl::Status SessionHandle::Run(Admission admission, Done<T> done, Fn fn) {
  return session_->Submit(
      [done = std::move(done), fn = std::move(fn)](Trainer& t) {
        done(engine::OutOfMemoryAsStatus("the operation",
                                         [&]() -> absl::StatusOr<T> { return fn(t); }));
      },
      admission);
}

const std::string& SessionHandle::id() const { return session_->id(); }

absl::Status SessionHandle::Describe(Done<SessionSummary> done) {
  return Run<SessionSummary>(Admission::kBounded, std::move(done),
                             [id = id()](Trainer& t) { return Summarize(id, t); });
}

absl::Status SessionHandle::Step(Done<int64_t> done, Admission admission) {
  return Run<int64_t>(admission, std::move(done), [](Trainer& t) { return t.step(); });
}

absl::Status SessionHandle::QuantStats(Done<QuantStatsSnapshot> done, Admission admission) {
  return Run<QuantStatsSnapshot>(admission, std::move(done),
                                 [](Trainer& t) { return SnapshotQuantStats(t); });
}

absl::Status SessionHandle::Train(std::shared_ptr<const engine::Batch> batch,
                                  Done<TrainResult> done, Admission admission) {
  const store::SessionStore* store = ops_->options_.store;
  return Run<TrainResult>(
      admission, std::move(done),
      [batch = std::move(batch), store, id = id()](Trainer& t) -> absl::StatusOr<TrainResult> {
        const auto start = Clock::now();
        TrainResult r;
        QTRAIN_ASSIGN_OR_RETURN(r.step, t.TrainStep(*batch));
        r.seconds = SecondsSince(start);
        r.mode = ModeOf(t);
        r.world_size = t.step_group() != nullptr ? t.step_group()->world_size() : 1;
        if (r.world_size > 1) r.reduce = t.last_reduce_times();
        r.last_durable_step = store != nullptr ? store->LastDurableStep(id) : -1;
        return r;
      });
}

absl::Status SessionHandle::Evaluate(std::shared_ptr<const engine::Batch> batch, bool update_stats,
                                     Done<EvalResult> done, Admission admission) {
  return Run<EvalResult>(
      admission, std::move(done),
      [batch = std::move(batch), update_stats](Trainer& t) -> absl::StatusOr<EvalResult> {
        const auto start = Clock::now();
        EvalResult r;
        QTRAIN_ASSIGN_OR_RETURN(r.step, t.EvalStep(*batch, update_stats));
        r.seconds = SecondsSince(start);
        r.token_level =
            t.model().spec().loss().kind() == engine::proto::Loss::SOFTMAX_CROSS_ENTROPY &&
            t.model().output_shape().size() >= 2;
        return r;
      });
}

absl::Status SessionHandle::Calibrate(std::shared_ptr<const Tensor> inputs,
                                      Done<CalibrateResult> done, Admission admission) {
  return Run<CalibrateResult>(
      admission, std::move(done),
      [inputs = std::move(inputs)](Trainer& t) -> absl::StatusOr<CalibrateResult> {
        const auto start = Clock::now();
        QTRAIN_RETURN_IF_ERROR(t.CalibrateStep(*inputs));
        return CalibrateResult{inputs->dim(0), SecondsSince(start)};
      });
}

absl::Status SessionHandle::Forward(std::shared_ptr<const Tensor> inputs, Done<Tensor> done) {
  return Run<Tensor>(Admission::kBounded, std::move(done),
                     [inputs = std::move(inputs)](Trainer& t) { return t.Predict(*inputs); });
}

absl::Status SessionHandle::UpdateRules(engine::proto::RuleSet rules, int64_t disk_limit,
                                        Done<SessionSummary> done) {
  SessionOps* ops = ops_;
  return Run<SessionSummary>(
      Admission::kBounded, std::move(done),
      [ops, rules = std::move(rules), disk_limit,
       id = id()](Trainer& t) -> absl::StatusOr<SessionSummary> {
        const engine::proto::RuleSet previous =
            t.model().rules() != nullptr ? t.model().rules()->source() : engine::proto::RuleSet();
        QTRAIN_RETURN_IF_ERROR(t.SetRules(rules));
        // Durable before acknowledged; if they cannot be saved, the session keeps the rules it
        // had (which compiled before, so restoring them cannot fail for their own sake).
        if (absl::Status saved = ops->MakeDurable(id, t, disk_limit); !saved.ok()) {
          (void)t.SetRules(previous);
          return saved;
        }
        return Summarize(id, t);
      });
}

absl::Status SessionHandle::Save(int64_t disk_limit, Done<SaveResult> done) {
  store::SessionStore* store = ops_->options_.store;
  return Run<SaveResult>(Admission::kBounded, std::move(done),
                         [store, disk_limit, id = id()](Trainer& t) -> absl::StatusOr<SaveResult> {
                           if (store == nullptr) {
                             return absl::FailedPreconditionError(
                                 "this server runs without a data dir; use DownloadCheckpoint");
                           }
                           const auto start = Clock::now();
                           QTRAIN_ASSIGN_OR_RETURN(store::SavedCheckpoint saved,
                                                   store->Save(id, t, disk_limit));
                           return SaveResult{std::move(saved), SecondsSince(start)};
                         });
}

absl::Status SessionHandle::EncodeCheckpoint(Done<FileResult> done) {
  return Run<FileResult>(
      Admission::kBounded, std::move(done), [](Trainer& t) -> absl::StatusOr<FileResult> {
        const auto start = Clock::now();
        QTRAIN_ASSIGN_OR_RETURN(store::SafetensorsFile file, store::CheckpointFromTrainer(t));
        std::string bytes = store::EncodeCheckpoint(file);
        return FileResult{std::move(bytes), SecondsSince(start)};
      });
}

absl::Status SessionHandle::Export(ExportFormat format,
                                   std::map<std::string, std::string> module_map, std::string name,
                                   Done<FileResult> done) {
  return Run<FileResult>(Admission::kBounded, std::move(done),
                         [format, module_map = std::move(module_map),
                          name = std::move(name)](Trainer& t) -> absl::StatusOr<FileResult> {
                           const auto start = Clock::now();
                           FileResult r;
                           if (format == ExportFormat::kOnnx) {
                             QTRAIN_ASSIGN_OR_RETURN(r.bytes, store::ExportOnnx(t, name));
                           } else {
                             QTRAIN_ASSIGN_OR_RETURN(store::SafetensorsFile file,
                                                     store::ExportCompressedTensors(t, module_map));
                             r.bytes = store::SerializeSafetensors(file);
                           }
                           r.seconds = SecondsSince(start);
                           return r;
                         });
}

absl::Status SessionHandle::Load(std::shared_ptr<const store::SafetensorsFile> file, int64_t bytes,
                                 int64_t disk_limit, Done<LoadResult> done) {
  SessionOps* ops = ops_;
  return Run<LoadResult>(
      Admission::kBounded, std::move(done),
      [ops, file = std::move(file), bytes, disk_limit,
       id = id()](Trainer& t) -> absl::StatusOr<LoadResult> {
        const auto start = Clock::now();
        // With a data dir the old state is kept until the new one is durable: a refused upload
        // changes nothing, neither the session nor its file. The copy is about the checkpoint's
        // size.
        std::map<std::string, Tensor> before;
        const int64_t before_step = t.step();
        engine::MemoryBudget::Lease kept;
        if (ops->durable()) {
          QTRAIN_ASSIGN_OR_RETURN(
              kept, engine::MemoryBudget::Reserve(ops->options_.budget, bytes,
                                                  "keeping the session's state during the upload"));
          QTRAIN_RETURN_IF_ERROR(
              engine::OutOfMemoryAsStatus("keeping the session's state", [&]() -> absl::Status {
                QTRAIN_ASSIGN_OR_RETURN(before, t.ExportState());
                return absl::OkStatus();
              }));
        }
        QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus(
            "loading the uploaded checkpoint", [&] { return store::LoadCheckpoint(*file, t); }));
        if (absl::Status saved = ops->MakeDurable(id, t, disk_limit); !saved.ok()) {
          absl::Status restored =
              ops->durable() ? t.ImportState(before, before_step) : absl::OkStatus();
          return absl::Status(
              saved.code(),
              absl::StrCat("the checkpoint could not be made durable, so it was not loaded: ",
                           saved.message(),
                           restored.ok() ? ""
                                         : absl::StrCat(" (and restoring the session's state "
                                                        "failed: ",
                                                        restored.message(), ")")));
        }
        return LoadResult{t.step(), SecondsSince(start)};
      });
}

absl::Status SessionHandle::SensitivityInput(std::shared_ptr<SensitivityJob> job,
                                             std::shared_ptr<const SensitivityJob::Input> input,
                                             Done<std::string> done, Admission admission) {
  return Run<std::string>(
      admission, std::move(done),
      [job = std::move(job), input = std::move(input)](Trainer& t) { return job->Add(t, *input); });
}

absl::Status SessionHandle::SensitivityNext(std::shared_ptr<SensitivityJob> job,
                                            Done<SensitivityProgress> done, Admission admission) {
  return Run<SensitivityProgress>(admission, std::move(done),
                                  [job = std::move(job)](Trainer& t) { return job->Next(t); });
}

absl::Status SessionOps::MakeDurable(const std::string& id, Trainer& t, int64_t disk_limit) {
  if (options_.store == nullptr) return absl::OkStatus();
  return options_.store->Save(id, t, disk_limit).status();
}

absl::StatusOr<SessionSummary> SessionOps::Create(const NewSession& request) {
  if (request.world_size != 1 && !options_.groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data_parallel.world_size ", request.world_size,
        ": this server has no data-parallel group configured (qtrain-server --dp_rendezvous, "
        "--dp_peers, --dp_secret_file)"));
  }
  if (request.checkpoint != nullptr && request.weights != nullptr) {
    return absl::InvalidArgumentError("a new session starts from a checkpoint or from weights");
  }
  SessionSummary summary;
  absl::StatusOr<std::shared_ptr<engine::Session>> created = options_.sessions->Create(
      request.id, request.model, request.rules, request.optimizer, request.seed,
      [&](const std::string& id, Trainer& t) -> absl::Status {
        if (request.world_size > 1) {
          QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<engine::StepGroup> group,
                                  options_.groups(id, request.world_size));
          t.set_step_group(std::move(group));
        }
        if (request.reserve) {
          QTRAIN_RETURN_IF_ERROR(request.reserve(id, t.model().num_parameters()));
        }
        if (request.checkpoint != nullptr) {
          QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus("loading the checkpoint", [&] {
            return store::LoadCheckpoint(*request.checkpoint, t);
          }));
        }
        if (request.weights != nullptr) {
          QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus("importing the weights", [&] {
            return store::ImportWeights(*request.weights, request.module_map, t);
          }));
        }
        // Durable before anyone can see it: a crash right after the answer cannot lose it, and
        // a failed save leaves nothing behind.
        QTRAIN_RETURN_IF_ERROR(MakeDurable(id, t, request.disk_limit));
        summary = Summarize(id, t);
        return absl::OkStatus();
      },
      request.backend);
  if (!created.ok()) return created.status();
  return summary;
}

absl::StatusOr<SessionHandle> SessionOps::Bind(const std::string& id) {
  QTRAIN_ASSIGN_OR_RETURN(std::shared_ptr<engine::Session> session, options_.sessions->Get(id));
  return SessionHandle(this, std::move(session));
}

absl::Status SessionOps::Delete(const std::string& id) {
  QTRAIN_RETURN_IF_ERROR(options_.sessions->Delete(id));
  if (options_.store != nullptr) return options_.store->Forget(id);
  return absl::OkStatus();
}

void SessionOps::SaveAll(
    const std::function<void(const std::string& id, const absl::Status&)>& failed) {
  if (options_.store == nullptr) return;
  for (const engine::SessionInfo& info : options_.sessions->List()) {
    absl::StatusOr<std::shared_ptr<engine::Session>> session = options_.sessions->Get(info.id);
    if (!session.ok()) continue;  // deleted meanwhile
    absl::Status saved;
    absl::Status ran = store::RunAndWait(
        **session, [&](Trainer& t) { saved = options_.store->Save(info.id, t).status(); });
    if (!ran.ok() || !saved.ok()) failed(info.id, ran.ok() ? saved : ran);
  }
}

std::function<void(const std::string&, Trainer&)> SessionOps::Autosave(
    store::SessionStore* store, int64_t every,
    std::function<void(const std::string& id, double seconds,
                       const absl::StatusOr<store::SavedCheckpoint>&)>
        saved) {
  return [store, every, saved = std::move(saved)](const std::string& id, Trainer& t) {
    if (t.step() - std::max<int64_t>(store->LastDurableStep(id), 0) < every) return;
    const auto start = Clock::now();
    absl::StatusOr<store::SavedCheckpoint> s = store->Save(id, t);
    saved(id, SecondsSince(start), s);
  };
}

}  // namespace qtrain::ops
