// Session: one training session's Trainer plus the executor thread that runs every operation on
// it, in submission order, with a bounded queue (a slow session pushes back instead of buffering
// without limit). Callers submit through the typed operations of server/ops (session_ops.h), so
// gRPC threads never run kernels (docs/architecture.md).
//
// Thread-safety: Submit, info() and Shutdown may be called from any thread. Tasks run one at a
// time on the executor thread and are the only code that touches the Trainer.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "kernels/backend/backend_registry.h"
#include "kernels/sync.h"
#include "server/engine/trainer.h"

namespace qtrain::engine {

struct SessionOptions {
  int threads = 1;     // OpenMP threads of this session's kernels
  int max_queued = 8;  // bounded tasks waiting behind the running one (unary calls)
  // Windowed tasks (streams, which bound their own in-flight work) waiting; a backstop only.
  int max_windowed = 4096;
  // Sessions reserve SessionBytes at creation and their steps StepBytes from the budget of their
  // backend's device (kernels/backend/backend_registry.h); null, or no pool for that device:
  // unlimited.
  const DeviceBudgets* budgets = nullptr;
  // Runs on the executor after every task (e.g. autosave every N steps); may be empty.
  std::function<void(const std::string& session_id, Trainer&)> after_task;
  // The backend its ops run on (kernels/backend/backend_registry.h): the server's --backend for
  // SessionManagerOptions, a session's own CreateSessionRequest.backend.
  std::string backend = kDefaultBackend;
};

// A snapshot of a session for listings; refreshed after every task.
struct SessionInfo {
  std::string id;
  int64_t step = 0;
  int64_t queued = 0;
  int64_t parameters = 0;
  int64_t non_trainable = 0;  // elements of non-trainable state (BatchNorm statistics)
};

class Session {
 public:
  // Builds the trainer on the calling thread (errors: Trainer::Create's; ResourceExhausted,
  // before anything is allocated, when the model does not fit options.budget) and starts the
  // executor. The session owns its backend (one oneDNN stream and primitive cache per executor).
  static absl::StatusOr<std::shared_ptr<Session>> Create(
      std::string id, const proto::ModelSpec& spec, const proto::RuleSet& rules,
      const proto::OptimizerConfig& optimizer, uint64_t seed, const SessionOptions& options);
  ~Session();  // Shutdown()
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // kBounded: ResourceExhausted when max_queued bounded tasks already wait (a unary call is told
  // to retry). kWindowed: the caller keeps at most a few tasks in flight (a stream's window), so
  // concurrent streams on one session wait their turn instead of failing.
  enum class Admission { kBounded, kWindowed };

  // Queues `task` to run on the executor with the trainer. ResourceExhausted when its admission's
  // limit is reached, Unavailable after Shutdown. A task that was accepted always runs.
  absl::Status Submit(std::function<void(Trainer&)> task,
                      Admission admission = Admission::kBounded);

  // Stops accepting tasks, runs the queued ones, joins the executor. Idempotent.
  void Shutdown();

  const std::string& id() const { return id_; }
  SessionInfo info() const;
  // Runs `fn` on the calling thread. Only before the session is shared (no task submitted):
  // SessionManager::Create's `prepare`.
  absl::Status PrepareUnshared(const std::function<absl::Status(Trainer&)>& fn);
  // True on this session's executor thread (inside one of its tasks).
  bool OnExecutor() const { return executor_.get_id() == std::this_thread::get_id(); }

 private:
  Session(std::string id, std::unique_ptr<Trainer> trainer, MemoryBudget::Lease lease,
          const SessionOptions& options);
  void Run();
  struct Task {
    std::function<void(Trainer&)> run;
    Admission admission;
  };

  const std::string id_;
  const SessionOptions options_;
  std::unique_ptr<Trainer> trainer_;  // touched only by the executor after construction
  MemoryBudget::Lease lease_;         // the trainer's SessionBytes

  mutable qtrain::Mutex mu_;
  std::deque<Task> queue_ ABSL_GUARDED_BY(mu_);
  int bounded_ ABSL_GUARDED_BY(mu_) = 0;  // kBounded tasks in queue_
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  SessionInfo info_ ABSL_GUARDED_BY(mu_);
  std::thread executor_;
};

struct SessionManagerOptions {
  int max_sessions = 16;
  SessionOptions session;
};

// The server's sessions by id. Thread-safe.
class SessionManager {
 public:
  explicit SessionManager(SessionManagerOptions options) : options_(std::move(options)) {}
  ~SessionManager() { ShutdownAll(); }

  // Creates a session (the name is generated when `id` is "" or "TENANT/"). ResourceExhausted
  // at max_sessions, AlreadyExists for a taken id, InvalidArgument for an id that is not valid
  // (session_id.h), and the errors of Session::Create.
  // `prepare` (may be empty) runs on the calling thread with the new session's id and trainer
  // before the session is registered — loading a checkpoint, making it durable — so that no
  // other call sees it half-made; its error is Create's, and nothing is left behind.
  // `backend` "" runs it on the manager's default backend; an unknown name is InvalidArgument.
  using Prepare = std::function<absl::Status(const std::string& id, Trainer&)>;
  absl::StatusOr<std::shared_ptr<Session>> Create(std::string id, const proto::ModelSpec& spec,
                                                  const proto::RuleSet& rules,
                                                  const proto::OptimizerConfig& optimizer,
                                                  uint64_t seed, const Prepare& prepare = nullptr,
                                                  const std::string& backend = "");
  // NotFound naming the id.
  absl::StatusOr<std::shared_ptr<Session>> Get(const std::string& id) const;
  std::vector<SessionInfo> List() const;
  // Removes the session; its accepted tasks still run. NotFound naming the id. Callable from the
  // session's own tasks (e.g. undoing a failed upload): the executor cannot join itself, so the
  // session is parked and joined by the next Create / Delete / ShutdownAll on another thread.
  absl::Status Delete(const std::string& id);
  // Stops every session (graceful shutdown: queued work finishes).
  void ShutdownAll();

 private:
  const SessionManagerOptions options_;
  mutable qtrain::Mutex mu_;
  // A null entry reserves an id whose session is being built and prepared (Create).
  std::map<std::string, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  // Sessions deleted from their own executor, waiting to be joined from another thread.
  std::vector<std::shared_ptr<Session>> parked_ ABSL_GUARDED_BY(mu_);
  // Joins and frees the parked sessions whose executor is not the calling thread.
  void ReapParked();
  std::map<std::string, uint64_t> next_id_ ABSL_GUARDED_BY(mu_);  // by tenant
};

}  // namespace qtrain::engine
