// Typed session operations: the one way the service layer (server/rpc) works on sessions. Each
// operation validates its arguments, runs on the session's executor (engine::Session) and
// completes through a callback with a plain result (results.h); no caller holds a Trainer or an
// engine::Session. The durability policy lives here, once: with a data dir, state a caller is
// told about is on disk first (a new session, new rules, an uploaded checkpoint), and an
// operation whose save fails gives the session back the state it had.
//
// Callbacks: an operation that returns OK runs `done` exactly once, on the session's executor
// (never on the calling thread, so a caller may hold its own lock while submitting). An
// operation that returns an error (the session's queue is full: ResourceExhausted; it is
// shutting down: Unavailable) never runs `done`.
//
// Thread-safety: SessionOps and SessionHandle may be used from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "server/engine/memory_budget.h"
#include "server/engine/session.h"
#include "server/engine/step_group.h"
#include "server/ops/results.h"
#include "server/ops/sensitivity_job.h"
#include "server/store/safetensors.h"
#include "server/store/session_store.h"

namespace qtrain::ops {

template <typename T>
using Done = std::function<void(absl::StatusOr<T>)>;
using Admission = engine::Session::Admission;

enum class ExportFormat { kCompressedTensors, kOnnx };

class SessionOps;

// One live session's operations. Copyable; keeps the session alive (its executor runs what was
// accepted) after a DeleteSession, which makes later operations fail Unavailable.
// Streams pass Admission::kWindowed (they bound their own batches in flight); unary calls the
// default, kBounded.
class SessionHandle {
 public:
  const std::string& id() const;

  absl::Status Describe(Done<SessionSummary> done);
  // The step count once the work queued before this has run.
  absl::Status Step(Done<int64_t> done, Admission admission = Admission::kBounded);
  absl::Status QuantStats(Done<QuantStatsSnapshot> done, Admission admission = Admission::kBounded);
  // Errors through `done`: those of Trainer::TrainStep / EvalStep / CalibrateStep / Predict.
  absl::Status Train(std::shared_ptr<const engine::Batch> batch, Done<TrainResult> done,
                     Admission admission = Admission::kBounded);
  absl::Status Evaluate(std::shared_ptr<const engine::Batch> batch, bool update_stats,
                        Done<EvalResult> done, Admission admission = Admission::kBounded);
  absl::Status Calibrate(std::shared_ptr<const Tensor> inputs, Done<CalibrateResult> done,
                         Admission admission = Admission::kBounded);
  absl::Status Forward(std::shared_ptr<const Tensor> inputs, Done<Tensor> done);
  // New rules, durable before `done` sees them; a failed save restores the previous rules.
  // `disk_limit`: the owner's checkpoint quota for the save (0: none).
  absl::Status UpdateRules(engine::proto::RuleSet rules, int64_t disk_limit,
                           Done<SessionSummary> done);
  // FailedPrecondition (through `done`) without a data dir.
  absl::Status Save(int64_t disk_limit, Done<SaveResult> done);
  // The session's checkpoint as safetensors bytes (checkpoint_io's format, with its checksum).
  absl::Status EncodeCheckpoint(Done<FileResult> done);
  // compressed-tensors (with `module_map`: qtrain path → checkpoint name) or ONNX (named
  // `name`). Errors of store::ExportCompressedTensors / ExportOnnx.
  absl::Status Export(ExportFormat format, std::map<std::string, std::string> module_map,
                      std::string name, Done<FileResult> done);
  // Loads an uploaded checkpoint (decoded, `bytes` long) into the session and, with a data dir,
  // makes it durable; a failed save gives the session its previous state back (the copy is
  // reserved from the memory budget: ResourceExhausted when it does not fit).
  absl::Status Load(std::shared_ptr<const store::SafetensorsFile> file, int64_t bytes,
                    int64_t disk_limit, Done<LoadResult> done);
  // The parts of a sensitivity analysis (sensitivity_job.h): one message's options and batch,
  // then each evaluation in turn, as separate executor tasks so that other calls run between.
  absl::Status SensitivityInput(std::shared_ptr<SensitivityJob> job,
                                std::shared_ptr<const SensitivityJob::Input> input,
                                Done<std::string> done, Admission admission);
  absl::Status SensitivityNext(std::shared_ptr<SensitivityJob> job, Done<SensitivityProgress> done,
                               Admission admission);

 private:
  friend class SessionOps;
  SessionHandle(SessionOps* ops, std::shared_ptr<engine::Session> session)
      : ops_(ops), session_(std::move(session)) {}
  template <typename T, typename Fn>
  absl::Status Run(Admission admission, Done<T> done, Fn fn);

  SessionOps* ops_;
  std::shared_ptr<engine::Session> session_;
};

// How a new session starts.
struct NewSession {
  std::string id;  // "" or "TENANT/": a generated name (SessionManager::Create)
  engine::proto::ModelSpec model;
  engine::proto::RuleSet rules;
  engine::proto::OptimizerConfig optimizer;
  uint64_t seed = 0;
  std::string backend;  // "": the server's default
  int world_size = 1;   // > 1: a data-parallel group (InvalidArgument when the server has none)
  // Initial state, at most one: a qtrain checkpoint, or float weights (store/import_weights.h
  // with `module_map`). Neither: the seeded initialisation.
  std::shared_ptr<const store::SafetensorsFile> checkpoint;
  std::shared_ptr<const store::SafetensorsFile> weights;
  std::map<std::string, std::string> module_map;
  // Reserves the new session's share of a quota before anything is saved (its id and
  // parameters); may be empty. Its error is Create's.
  std::function<absl::Status(const std::string& id, int64_t parameters)> reserve;
  int64_t disk_limit = 0;  // the owner's checkpoint quota for the first save (0: none)
};

struct SessionOpsOptions {
  engine::SessionManager* sessions = nullptr;  // required
  store::SessionStore* store = nullptr;        // null: no data dir, nothing is durable
  engine::MemoryBudget* budget = nullptr;      // null: unbounded
  engine::StepGroupFactory groups;             // empty: no data-parallel sessions
};

class SessionOps {
 public:
  explicit SessionOps(SessionOpsOptions options) : options_(std::move(options)) {}

  // Builds, initialises and (with a data dir) saves a session before registering it: no other
  // call sees it half-made, and a failure leaves nothing behind. Runs on the calling thread
  // (a control worker: building is not for gRPC threads). Errors: SessionManager::Create's,
  // the initial state's loader's, `reserve`'s and the save's.
  absl::StatusOr<SessionSummary> Create(const NewSession& request);
  // The live session `id`; NotFound naming it.
  absl::StatusOr<SessionHandle> Bind(const std::string& id);
  // Stops the session (its accepted work still runs) and forgets its checkpoint. NotFound naming
  // the id; Internal when the checkpoint cannot be removed. Joins the executor: not on gRPC
  // threads.
  absl::Status Delete(const std::string& id);
  std::vector<engine::SessionInfo> List() const { return options_.sessions->List(); }
  bool data_parallel() const { return static_cast<bool>(options_.groups); }
  bool durable() const { return options_.store != nullptr; }
  // The data dir checkpoints are saved in ("" without one).
  std::string data_dir() const { return durable() ? options_.store->root() : std::string(); }

  // Saves every session (graceful shutdown), waiting for each; calls `failed` for those that
  // could not be saved. Nothing without a data dir.
  void SaveAll(const std::function<void(const std::string& id, const absl::Status&)>& failed);
  // An after_task hook (SessionOptions) that saves a session once it is `every` steps past its
  // last durable checkpoint, and reports each save to `saved` (bytes, or the error).
  static std::function<void(const std::string&, engine::Trainer&)> Autosave(
      store::SessionStore* store, int64_t every,
      std::function<void(const std::string& id, double seconds,
                         const absl::StatusOr<store::SavedCheckpoint>&)>
          saved);

 private:
  friend class SessionHandle;
  // Saves `t` as `id`, or OK without a data dir.
  absl::Status MakeDurable(const std::string& id, engine::Trainer& t, int64_t disk_limit);

  const SessionOpsOptions options_;
};

}  // namespace qtrain::ops
