#include "server/rpc/tenants.h"

#include "absl/strings/str_cat.h"
#include "server/engine/session_id.h"

namespace qtrain::rpc {

absl::Status QuotaError(const std::string& tenant, const char* what, int64_t use, int64_t asked,
                        int64_t limit, const char* key) {
  return absl::ResourceExhaustedError(absl::StrCat(
      "tenant \"", tenant, "\" uses ", use, " ", what, " and asks for ", asked,
      " more; its quota is ", limit, " (", key, " in the access file, or --tenant_", key, ")"));
}

TenantQuota TenantQuotas::QuotaOf(const std::string& tenant) const {
  if (tenant.empty()) return TenantQuota();
  return access_ != nullptr ? access_->QuotaOf(tenant, defaults_) : defaults_;
}

absl::Status TenantQuotas::ReserveNewSession(const std::string& id, int64_t parameters) {
  const std::string tenant(engine::TenantOf(id));
  const TenantQuota q = QuotaOf(tenant);
  if (q.max_sessions <= 0 && q.max_parameters <= 0) return absl::OkStatus();
  qtrain::MutexLock lock(&mu_);
  int64_t sessions = 0;
  int64_t params = 0;
  // Registered sessions, then those being created (a registered one still reserved counts once).
  for (const engine::SessionInfo& info : sessions_->List()) {
    if (info.id == id || pending_.count(info.id) || engine::TenantOf(info.id) != tenant) continue;
    ++sessions;
    params += info.parameters;
  }
  for (const auto& [other, other_params] : pending_) {
    if (other == id || engine::TenantOf(other) != tenant) continue;
    ++sessions;
    params += other_params;
  }
  if (q.max_sessions > 0 && sessions + 1 > q.max_sessions) {
    return QuotaError(tenant, "sessions", sessions, 1, q.max_sessions, "max_sessions");
  }
  if (q.max_parameters > 0 && params + parameters > q.max_parameters) {
    return QuotaError(tenant, "parameters", params, parameters, q.max_parameters, "max_parameters");
  }
  pending_[id] = parameters;
  return absl::OkStatus();
}

void TenantQuotas::ReleaseNewSession(const std::string& id) {
  qtrain::MutexLock lock(&mu_);
  pending_.erase(id);
}

absl::Status TenantQuotas::AcquireStream(const std::string& tenant) {
  const TenantQuota q = QuotaOf(tenant);
  qtrain::MutexLock lock(&mu_);
  int64_t& open = streams_[tenant];
  if (q.max_streams > 0 && open + 1 > q.max_streams) {
    return QuotaError(tenant, "streams", open, 1, q.max_streams, "max_streams");
  }
  ++open;
  return absl::OkStatus();
}

void TenantQuotas::ReleaseStream(const std::string& tenant) {
  qtrain::MutexLock lock(&mu_);
  auto it = streams_.find(tenant);
  if (it != streams_.end() && --it->second <= 0) streams_.erase(it);
}

}  // namespace qtrain::rpc
