// SessionStore: the server's durable sessions, one checkpoint per session in
// <data_dir>/sessions/<id>.safetensors (written through checkpoint_io's temp-file + fsync +
// rename), restored when the server starts.
//
// Thread-safety: all methods may be called from any thread; Save* must run on the session's
// executor (it reads the Trainer), which serializes the saves of one session.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "server/engine/session.h"

namespace qtrain::store {

struct SavedCheckpoint {
  std::string path;
  int64_t step = 0;
  int64_t bytes = 0;
  std::string crc32;
};

class SessionStore {
 public:
  // Creates <data_dir>/sessions if needed. Internal naming the path when it cannot.
  static absl::StatusOr<std::unique_ptr<SessionStore>> Open(const std::string& data_dir);

  // Encodes the trainer's checkpoint and writes it durably. Run on the session's executor.
  absl::StatusOr<SavedCheckpoint> Save(const std::string& id, engine::Trainer& trainer);
  // The step of the newest durable checkpoint of `id`, or -1.
  int64_t LastDurableStep(const std::string& id) const;
  // Removes the session's checkpoint (after DeleteSession).
  void Forget(const std::string& id);

  // Recreates every stored session in `sessions` at its durable step. Returns the ids restored;
  // files that fail to load are skipped and reported in `errors`.
  std::vector<std::string> RestoreAll(engine::SessionManager& sessions,
                                      std::vector<std::string>* errors);

  std::string PathFor(const std::string& id) const;

 private:
  explicit SessionStore(std::string dir) : dir_(std::move(dir)) {}
  const std::string dir_;  // <data_dir>/sessions
  mutable absl::Mutex mu_;
  std::map<std::string, int64_t> durable_ ABSL_GUARDED_BY(mu_);
};

// Runs `fn` on the session's executor and waits for it. The errors of Session::Submit.
absl::Status RunAndWait(engine::Session& session, std::function<void(engine::Trainer&)> fn);

}  // namespace qtrain::store
