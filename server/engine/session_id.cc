#include "server/engine/session_id.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace qtrain::engine {

bool IsValidIdPart(absl::string_view part) {
  if (part.empty() || part.size() > 64) return false;
  for (char c : part) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

absl::StatusOr<SessionId> ParseSessionId(absl::string_view id, bool allow_empty_name) {
  SessionId out;
  const size_t slash = id.find('/');
  out.name = slash == absl::string_view::npos ? id : id.substr(slash + 1);
  if (slash != absl::string_view::npos) out.tenant = id.substr(0, slash);
  const bool tenant_ok = slash == absl::string_view::npos || IsValidIdPart(out.tenant);
  const bool name_ok = IsValidIdPart(out.name) || (allow_empty_name && out.name.empty());
  if (!tenant_ok || !name_ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("session id \"", absl::CEscape(id.substr(0, 200)),
                     "\" must be 1 to 64 of [A-Za-z0-9_-] (or TENANT/NAME, each part so)"));
  }
  return out;
}

absl::string_view TenantOf(absl::string_view id) {
  const size_t slash = id.find('/');
  return slash == absl::string_view::npos ? absl::string_view() : id.substr(0, slash);
}

std::string JoinSessionId(absl::string_view tenant, absl::string_view name) {
  return tenant.empty() ? std::string(name) : absl::StrCat(tenant, "/", name);
}

}  // namespace qtrain::engine
