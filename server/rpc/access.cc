#include "server/rpc/access.h"

#include <openssl/sha.h>
#include <sys/stat.h>

#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/engine/session_id.h"
#include "server/store/checkpoint_io.h"

namespace qtrain::rpc {
namespace {

constexpr int64_t kMaxAccessFileBytes = int64_t{16} << 20;

// The file's identity for change detection: a rewrite, a rename over it and Kubernetes' symlink
// swap of a mounted Secret all change one of these.
std::string StampOf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return "";
  return absl::StrCat(st.st_ino, ":", st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec);
}

absl::StatusOr<int64_t> QuotaField(const nlohmann::json& o, const char* key,
                                   const std::string& where) {
  if (!o.contains(key)) return 0;
  const nlohmann::json& v = o[key];
  if (!v.is_number_integer() || v.get<int64_t>() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ".", key, " = ", v.dump(), ": must be an integer >= 0 (0: no limit)"));
  }
  return v.get<int64_t>();
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kReader:
      return "reader";
    case Role::kTrainer:
      return "trainer";
    case Role::kAdmin:
      return "admin";
  }
  return "reader";
}

std::optional<Role> ParseRole(absl::string_view name) {
  for (Role r : {Role::kReader, Role::kTrainer, Role::kAdmin}) {
    if (RoleName(r) == name) return r;
  }
  return std::nullopt;
}

bool RoleAllows(Role role, absl::string_view method) {
  static const std::set<absl::string_view> kReads = {
      "GetSession",         "ListSessions",  "GetQuantStats",   "Forward",           "Evaluate",
      "DownloadCheckpoint", "GetServerInfo", "ExportQuantized", "AnalyzeSensitivity"};
  static const std::set<absl::string_view> kWrites = {
      "CreateSession", "DeleteSession",  "UpdateRules",      "Train",
      "Calibrate",     "SaveCheckpoint", "UploadCheckpoint", "ImportWeights"};
  if (kReads.count(method)) return true;
  if (kWrites.count(method)) return role >= Role::kTrainer;
  return role == Role::kAdmin;  // anything new is admin-only until it is classified
}

bool IsMutating(absl::string_view method) {
  return RoleAllows(Role::kTrainer, method) && !RoleAllows(Role::kReader, method);
}

std::string Sha256Hex(absl::string_view text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * SHA256_DIGEST_LENGTH);
  for (unsigned char b : digest) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 15]);
  }
  return out;
}

absl::StatusOr<AccessConfig> ParseAccessConfig(absl::string_view json) {
  nlohmann::json doc = nlohmann::json::parse(json, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object()) {
    return absl::InvalidArgumentError("the access file is not a JSON object");
  }
  for (const auto& [key, value] : doc.items()) {
    if (key != "tokens" && key != "tenants") {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown key \"", key, "\" (expected \"tokens\" and \"tenants\")"));
    }
  }
  AccessConfig config;
  const nlohmann::json tokens = doc.value("tokens", nlohmann::json::array());
  if (!tokens.is_array()) return absl::InvalidArgumentError("\"tokens\" must be an array");
  for (size_t i = 0; i < tokens.size(); ++i) {
    const nlohmann::json& t = tokens[i];
    const std::string where = absl::StrCat("tokens[", i, "]");
    if (!t.is_object()) return absl::InvalidArgumentError(where + " must be an object");
    auto field = [&](const char* key) -> absl::StatusOr<std::string> {
      if (!t.contains(key) || !t[key].is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(where, ".", key, " must be a string"));
      }
      return t[key].get<std::string>();
    };
    QTRAIN_ASSIGN_OR_RETURN(std::string hash, field("sha256"));
    QTRAIN_ASSIGN_OR_RETURN(std::string tenant, field("tenant"));
    QTRAIN_ASSIGN_OR_RETURN(std::string role_name, field("role"));
    hash = absl::AsciiStrToLower(hash);
    bool hex = hash.size() == 64;
    for (char c : hash) hex = hex && absl::ascii_isxdigit(static_cast<unsigned char>(c));
    if (!hex) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ".sha256 must be 64 hex digits (the token's SHA-256; `qtrain token` makes one)"));
    }
    if (!engine::IsValidIdPart(tenant)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".tenant \"", absl::CEscape(tenant),
                                                     "\" must be 1 to 64 of [A-Za-z0-9_-]"));
    }
    std::optional<Role> role = ParseRole(role_name);
    if (!role) {
      return absl::InvalidArgumentError(absl::StrCat(where, ".role \"", absl::CEscape(role_name),
                                                     "\" must be admin, trainer or reader"));
    }
    if (!config.by_hash.emplace(hash, Identity{tenant, *role}).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, " repeats an earlier token's hash"));
    }
  }
  const nlohmann::json tenants = doc.value("tenants", nlohmann::json::object());
  if (!tenants.is_object()) return absl::InvalidArgumentError("\"tenants\" must be an object");
  for (const auto& [name, q] : tenants.items()) {
    const std::string where = absl::StrCat("tenants.", name);
    if (!engine::IsValidIdPart(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat("tenant \"", absl::CEscape(name), "\" must be 1 to 64 of [A-Za-z0-9_-]"));
    }
    if (!q.is_object()) return absl::InvalidArgumentError(where + " must be an object");
    for (const auto& [key, value] : q.items()) {
      if (key != "max_sessions" && key != "max_parameters" && key != "max_streams" &&
          key != "max_checkpoint_bytes") {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": unknown key \"", key,
                         "\" (max_sessions, max_parameters, max_streams, max_checkpoint_bytes)"));
      }
    }
    TenantQuota quota;
    QTRAIN_ASSIGN_OR_RETURN(quota.max_sessions, QuotaField(q, "max_sessions", where));
    QTRAIN_ASSIGN_OR_RETURN(quota.max_parameters, QuotaField(q, "max_parameters", where));
    QTRAIN_ASSIGN_OR_RETURN(quota.max_streams, QuotaField(q, "max_streams", where));
    QTRAIN_ASSIGN_OR_RETURN(quota.max_checkpoint_bytes,
                            QuotaField(q, "max_checkpoint_bytes", where));
    config.quotas[name] = quota;
  }
  return config;
}

namespace {
absl::StatusOr<AccessConfig> ReadAccessFile(const std::string& path) {
  absl::StatusOr<std::string> text = store::ReadWholeFile(path, kMaxAccessFileBytes);
  if (!text.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens=", path, ": ", text.status().message()));
  }
  absl::StatusOr<AccessConfig> config = ParseAccessConfig(*text);
  if (!config.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--auth_tokens=", path, ": ", config.status().message()));
  }
  return config;
}
}  // namespace

absl::StatusOr<std::unique_ptr<AccessFile>> AccessFile::Open(
    std::string path, std::function<void(const absl::Status&)> on_reload_error) {
  const std::string stamp = StampOf(path);
  QTRAIN_ASSIGN_OR_RETURN(AccessConfig config, ReadAccessFile(path));
  auto file =
      std::unique_ptr<AccessFile>(new AccessFile(std::move(path), std::move(on_reload_error)));
  qtrain::MutexLock lock(&file->mu_);
  file->config_ = std::make_shared<const AccessConfig>(std::move(config));
  file->stamp_ = stamp;
  file->checked_ = std::chrono::steady_clock::now();
  return file;
}

std::shared_ptr<const AccessConfig> AccessFile::Current() {
  qtrain::MutexLock lock(&mu_);
  const auto now = std::chrono::steady_clock::now();
  if (now - checked_ < std::chrono::seconds(1)) return config_;
  checked_ = now;
  const std::string stamp = StampOf(path_);
  if (stamp.empty() || stamp == stamp_) return config_;  // gone for a moment: keep the last
  stamp_ = stamp;
  absl::StatusOr<AccessConfig> config = ReadAccessFile(path_);
  if (!config.ok()) {
    if (on_error_) on_error_(config.status());
    return config_;
  }
  config_ = std::make_shared<const AccessConfig>(*std::move(config));
  return config_;
}

std::optional<Identity> AccessFile::Lookup(absl::string_view token) {
  std::shared_ptr<const AccessConfig> config = Current();
  auto it = config->by_hash.find(Sha256Hex(token));
  if (it == config->by_hash.end()) return std::nullopt;
  return it->second;
}

TenantQuota AccessFile::QuotaOf(const std::string& tenant, const TenantQuota& defaults) {
  std::shared_ptr<const AccessConfig> config = Current();
  TenantQuota q = defaults;
  auto it = config->quotas.find(tenant);
  if (it == config->quotas.end()) return q;
  if (it->second.max_sessions > 0) q.max_sessions = it->second.max_sessions;
  if (it->second.max_parameters > 0) q.max_parameters = it->second.max_parameters;
  if (it->second.max_streams > 0) q.max_streams = it->second.max_streams;
  if (it->second.max_checkpoint_bytes > 0) q.max_checkpoint_bytes = it->second.max_checkpoint_bytes;
  return q;
}

}  // namespace qtrain::rpc
