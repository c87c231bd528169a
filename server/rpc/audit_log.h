// AuditLog: one JSON line per call that changes state (CreateSession, DeleteSession,
// UpdateRules, Train, Calibrate, SaveCheckpoint, UploadCheckpoint, ImportWeights, Evaluate with
// update_stats) and per call refused for its credentials or role:
//   {"ts":"2026-11-30T09:00:00.123Z","audit":"qtrain","tenant":"team-a","role":"trainer",
//    "peer":"ipv4:10.0.0.7:51234","method":"Train","session":"run1","code":"OK"}
// plus "error" (the status message) when the call failed. Never a token, never a payload.
// Thread-safe; each line is written whole and flushed.
#pragma once

#include <cstdio>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/sync.h"
#include "server/rpc/caller.h"

namespace qtrain::rpc {

// What one audit line keeps of a client-controlled field (peer, method, session) and of an
// error message; longer ones are cut there and say their length.
inline constexpr size_t kAuditMaxField = 256;
inline constexpr size_t kAuditMaxError = 1024;

struct AuditEntry {
  const Caller* caller = nullptr;  // null: not authenticated
  std::string peer;
  std::string method;
  std::string session;  // as the caller named it; may be empty
  absl::Status status;
};

class AuditLog {
 public:
  // "-": standard error; otherwise a file opened for appending. InvalidArgument naming the path
  // when it cannot be opened.
  static absl::StatusOr<std::unique_ptr<AuditLog>> Open(const std::string& destination);
  ~AuditLog();

  void Record(const AuditEntry& entry);
  // The JSON line of an entry (without the newline), at `now_ms` since the epoch.
  static std::string Format(const AuditEntry& entry, int64_t now_ms);

 private:
  AuditLog(std::FILE* out, bool owned) : out_(out), owned_(owned) {}
  std::FILE* const out_;
  const bool owned_;
  qtrain::Mutex mu_;
};

}  // namespace qtrain::rpc
