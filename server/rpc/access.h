// Who may call the server: the access file (--auth_tokens) maps bearer tokens — stored only as
// SHA-256 hashes — to a tenant and a role, and sets per-tenant quotas:
//
//   {"tokens":  [{"sha256": "<64 hex>", "tenant": "team-a", "role": "trainer", "name": "ci"}],
//    "tenants": {"team-a": {"max_sessions": 4, "max_parameters": 50000000,
//                           "max_streams": 8, "max_checkpoint_bytes": 1073741824}}}
//
// Roles: reader (reads and inference: Get/List sessions, GetQuantStats, Forward, Evaluate,
// DownloadCheckpoint, ExportQuantized, GetServerInfo), trainer (reader's calls plus everything that
// changes its tenant's sessions: CreateSession, DeleteSession, UpdateRules, Train, Calibrate,
// SaveCheckpoint, UploadCheckpoint, ImportWeights), admin (every call, on every tenant's sessions).
//
// Thread-safety: AccessFile is shared by every gRPC thread; Lookup re-reads the file when its
// modification time changed (at most once a second), so tokens rotate without a restart.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "kernels/sync.h"

namespace qtrain::rpc {

enum class Role { kReader = 0, kTrainer = 1, kAdmin = 2 };

absl::string_view RoleName(Role role);
std::optional<Role> ParseRole(absl::string_view name);

// The authenticated caller.
struct Identity {
  std::string tenant;
  Role role = Role::kReader;
};

// Per-tenant limits; 0 means no limit of its own (the server-wide ones still apply).
struct TenantQuota {
  int64_t max_sessions = 0;
  int64_t max_parameters = 0;
  int64_t max_streams = 0;
  int64_t max_checkpoint_bytes = 0;
};

// True when `role` may call `method` (the Trainer method's name, e.g. "CreateSession").
bool RoleAllows(Role role, absl::string_view method);
// True for the methods that change state: those a trainer may call and a reader may not (the
// audit log records them).
bool IsMutating(absl::string_view method);

// Lowercase hex SHA-256 of `text`.
std::string Sha256Hex(absl::string_view text);

// A parsed access file.
struct AccessConfig {
  std::map<std::string, Identity> by_hash;  // hex SHA-256 of the token -> who it is
  std::map<std::string, TenantQuota> quotas;
};

// Parses the access file's JSON. InvalidArgument naming the entry and the field for bad JSON,
// a malformed hash, an unknown role, a tenant name that is not 1 to 64 of [A-Za-z0-9_-], a
// duplicate hash, or a negative quota.
absl::StatusOr<AccessConfig> ParseAccessConfig(absl::string_view json);

class AccessFile {
 public:
  // Reads and parses `path`: the errors of ParseAccessConfig, InvalidArgument naming the path
  // when it cannot be read. `on_reload_error` (may be empty) hears of later reloads that fail;
  // the previous configuration then stays in force.
  static absl::StatusOr<std::unique_ptr<AccessFile>> Open(
      std::string path, std::function<void(const absl::Status&)> on_reload_error = nullptr);

  // The identity of a bearer token, or nullopt when the file does not list it.
  std::optional<Identity> Lookup(absl::string_view token);
  // The quota of `tenant` from the file, over `defaults` field by field.
  TenantQuota QuotaOf(const std::string& tenant, const TenantQuota& defaults);
  const std::string& path() const { return path_; }

 private:
  AccessFile(std::string path, std::function<void(const absl::Status&)> on_error)
      : path_(std::move(path)), on_error_(std::move(on_error)) {}
  // Re-reads the file when its modification time changed; at most once a second.
  std::shared_ptr<const AccessConfig> Current();

  const std::string path_;
  const std::function<void(const absl::Status&)> on_error_;
  qtrain::Mutex mu_;
  std::shared_ptr<const AccessConfig> config_ ABSL_GUARDED_BY(mu_);
  std::string stamp_ ABSL_GUARDED_BY(mu_);  // inode, size and mtime of the parsed file
  std::chrono::steady_clock::time_point checked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qtrain::rpc
