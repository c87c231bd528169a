#include "server/rpc/audit_log.h"

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace qtrain::rpc {
namespace {

// A client-controlled field as the audit line copies it: at most `max` bytes, then how long it
// was, so that a caller cannot grow the log by the size of what it sends.
std::string Bounded(absl::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  return absl::StrCat(s.substr(0, max), "... (", s.size(), " bytes)");
}

}  // namespace

absl::StatusOr<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& destination) {
  if (destination == "-") return std::unique_ptr<AuditLog>(new AuditLog(stderr, false));
  std::FILE* f = std::fopen(destination.c_str(), "ae");
  if (f == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("--audit_log=", destination, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<AuditLog>(new AuditLog(f, true));
}

AuditLog::~AuditLog() {
  if (owned_) std::fclose(out_);
}

std::string AuditLog::Format(const AuditEntry& e, int64_t now_ms) {
  const std::time_t secs = static_cast<std::time_t>(now_ms / 1000);
  std::tm utc;
  gmtime_r(&secs, &utc);
  nlohmann::ordered_json line;  // fields in the documented order
  line["ts"] = absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", utc.tm_year + 1900,
                               utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                               static_cast<int>(now_ms % 1000));
  line["audit"] = "qtrain";
  const bool known = e.caller != nullptr && e.caller->authenticated();
  line["tenant"] = e.caller != nullptr ? e.caller->TenantLabel() : "-";
  line["role"] = known ? std::string(RoleName(e.caller->identity()->role)) : "-";
  line["peer"] = Bounded(e.peer, kAuditMaxField);
  line["method"] = Bounded(e.method, kAuditMaxField);
  line["session"] = Bounded(e.session, kAuditMaxField);
  line["code"] = absl::StatusCodeToString(e.status.code());
  if (!e.status.ok()) line["error"] = Bounded(e.status.message(), kAuditMaxError);
  // Invalid UTF-8 (a client's session id) is replaced, never thrown on.
  return line.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

void AuditLog::Record(const AuditEntry& entry) {
  const int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  const std::string line = Format(entry, now_ms) + "\n";
  qtrain::MutexLock lock(&mu_);
  std::fwrite(line.data(), 1, line.size(), out_);
  std::fflush(out_);
}

}  // namespace qtrain::rpc
