#include "server/rpc/caller.h"

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/session_id.h"

namespace qtrain::rpc {

const std::string& Caller::tenant() const {
  static const std::string kNone;
  return identity_ ? identity_->tenant : kNone;
}

std::string Caller::TenantLabel() const { return identity_ ? identity_->tenant : "-"; }

absl::StatusOr<std::string> Caller::Resolve(const std::string& requested, bool creating) const {
  if (!identity_) return requested;
  // "/NAME": a session without a tenant (made while the server ran without authentication);
  // only admins may reach those.
  if (!requested.empty() && requested[0] == '/') {
    const std::string name = requested.substr(1);
    if (identity_->role != Role::kAdmin || !engine::IsValidIdPart(name)) {
      return absl::NotFoundError(absl::StrCat("session \"", requested, "\" does not exist"));
    }
    return name;
  }
  QTRAIN_ASSIGN_OR_RETURN(const engine::SessionId id, engine::ParseSessionId(requested, creating));
  if (id.tenant.empty()) return engine::JoinSessionId(identity_->tenant, id.name);
  if (id.tenant != identity_->tenant && identity_->role != Role::kAdmin) {
    // Not "permission denied": that would tell the caller the other tenant's session exists.
    return absl::NotFoundError(absl::StrCat("session \"", requested, "\" does not exist"));
  }
  return requested;
}

std::string Caller::Show(const std::string& id) const {
  if (!identity_) return id;
  const absl::string_view tenant = engine::TenantOf(id);
  if (tenant.empty()) return "/" + id;  // a session without a tenant (admins only)
  if (tenant == identity_->tenant) return id.substr(tenant.size() + 1);
  return id;
}

bool Caller::Sees(const std::string& id) const {
  return !identity_ || identity_->role == Role::kAdmin || engine::TenantOf(id) == identity_->tenant;
}

}  // namespace qtrain::rpc
