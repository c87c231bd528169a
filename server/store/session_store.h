// SessionStore: the server's durable sessions, one checkpoint per session in
// <data_dir>/sessions/<id>.safetensors, or <data_dir>/tenants/<tenant>/<name>.safetensors for a
// tenant's session "<tenant>/<name>" (engine/session_id.h: both parts are path-safe), written
// through checkpoint_io's temp-file + fsync + rename and restored, with their owner, when the
// server starts.
//
// Thread-safety: all methods may be called from any thread; Save* must run on the session's
// executor (it reads the Trainer), which serializes the saves of one session.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "kernels/sync.h"
#include "server/engine/session.h"
#include "server/engine/step_group.h"

namespace qtrain::store {

struct SavedCheckpoint {
  std::string path;
  int64_t step = 0;
  int64_t bytes = 0;
  std::string crc32;
};

class SessionStore {
 public:
  // Creates <data_dir>/sessions if needed and locks the data dir (an flock on <data_dir>/LOCK,
  // held until the store is destroyed) so that two servers never share it. Internal naming the
  // path when it cannot be created; FailedPrecondition naming the other server's pid when the
  // lock is held (a file system without flock gets a warning on stderr, no lock).
  static absl::StatusOr<std::unique_ptr<SessionStore>> Open(const std::string& data_dir);
  ~SessionStore();
  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  // Encodes the trainer's checkpoint and writes it durably. Run on the session's executor.
  // `disk_limit` > 0: ResourceExhausted (nothing written) when the tenant's checkpoints, with
  // this one replacing the session's previous one, would exceed it; saves of one tenant in
  // flight on other sessions count too, so concurrent saves cannot overshoot it together.
  absl::StatusOr<SavedCheckpoint> Save(const std::string& id, engine::Trainer& trainer,
                                       int64_t disk_limit = 0);
  // The step of the newest durable checkpoint of `id`, or -1.
  int64_t LastDurableStep(const std::string& id) const;
  // Removes the session's checkpoint durably (after DeleteSession has stopped its executor, so no
  // autosave can write it again). Internal naming the path and the reason when the file exists
  // and cannot be removed: the session would come back at the next start.
  absl::Status Forget(const std::string& id);

  // Recreates every stored session in `sessions` at its durable step. Returns the ids restored;
  // files that fail to load are skipped and reported in `errors`. Leftover `*.tmp` files of
  // writes a crash interrupted are removed first.
  // A data-parallel session gets its group from `groups` (a restored session's error when
  // absent or failing: the server can no longer serve its world size).
  std::vector<std::string> RestoreAll(engine::SessionManager& sessions,
                                      std::vector<std::string>* errors,
                                      const engine::StepGroupFactory& groups = nullptr);

  std::string PathFor(const std::string& id) const;
  // The data dir this store keeps its files in.
  const std::string& root() const { return root_; }

 private:
  struct Durable {
    int64_t step = -1;
    int64_t bytes = 0;
  };
  SessionStore(std::string root, int lock_fd) : root_(std::move(root)), lock_fd_(lock_fd) {}
  std::string DirFor(absl::string_view tenant) const;
  void RestoreDir(const std::string& tenant, engine::SessionManager& sessions,
                  std::vector<std::string>* restored, std::vector<std::string>* errors,
                  const engine::StepGroupFactory& groups);
  const std::string root_;  // the data dir
  const int lock_fd_;       // holds the flock on <data_dir>/LOCK
  mutable qtrain::Mutex mu_;
  std::map<std::string, Durable> durable_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> writing_ ABSL_GUARDED_BY(mu_);  // id -> bytes being saved
};

// Runs `fn` on the session's executor and waits for it. The errors of Session::Submit.
absl::Status RunAndWait(engine::Session& session, std::function<void(engine::Trainer&)> fn);

}  // namespace qtrain::store
