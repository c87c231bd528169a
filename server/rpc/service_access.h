// ServiceAccess: what the handlers consult about the caller — authentication (auth.h), per-tenant
// quotas (tenants.h) and the audit log (audit_log.h) — and CallGate, one call's admission and its
// audit record. Owned by the server; every pointer may be null (feature off).
#pragma once

#include <string>

#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "server/rpc/audit_log.h"
#include "server/rpc/auth.h"
#include "server/rpc/caller.h"
#include "server/rpc/tenants.h"

namespace qtrain::rpc {

struct ServiceAccess {
  const Authenticator* auth = nullptr;
  TenantQuotas* tenants = nullptr;
  AuditLog* audit = nullptr;
};

// One call: its caller, and (for mutating methods) its audit line when it ends.
class CallGate {
 public:
  CallGate() = default;
  // Authorizes `method` for the call of `ctx` (access may be null: everything allowed).
  CallGate(const ServiceAccess* access, const grpc::ServerContextBase& ctx, std::string method)
      : access_(access), peer_(ctx.peer()), method_(std::move(method)) {
    if (access_ != nullptr && access_->auth != nullptr && access_->auth->enabled()) {
      credentials_ = Authenticator::CredentialsOf(ctx);
      absl::StatusOr<Identity> who = access_->auth->Authenticate(credentials_);
      if (who.ok()) {
        admitted_ = Authenticator::Authorize(*who, method_);
        caller_ = Caller(*std::move(who));  // known, also when the role is refused (audit)
      } else {
        admitted_ = who.status();
      }
    }
  }

  // OK, or why the call is refused (Unauthenticated / PermissionDenied).
  const absl::Status& admitted() const { return admitted_; }
  const Caller& caller() const { return caller_; }
  TenantQuotas* tenants() const { return access_ != nullptr ? access_->tenants : nullptr; }

  // For a stream's later messages: the call's credentials still name the same tenant with a role
  // that may call the method. Unauthenticated when the token was revoked (or now names another
  // tenant), PermissionDenied when the role was lowered.
  absl::Status StillAdmitted() const {
    if (!caller_.authenticated() || !admitted_.ok()) return admitted_;
    absl::StatusOr<Identity> who = access_->auth->Authenticate(credentials_);
    if (!who.ok() || who->tenant != caller_.tenant()) {
      return absl::UnauthenticatedError(absl::StrCat(
          "the credentials of this ", method_, " stream are no longer valid on this server",
          who.ok() ? "" : absl::StrCat(": ", who.status().message())));
    }
    return Authenticator::Authorize(*who, method_);
  }

  // The session the call is about, as the caller named it (for the audit line).
  void set_session(std::string session) { session_ = std::move(session); }
  // A message of the call does what `method` does (Evaluate with update_stats: Calibrate): the
  // caller's role must allow that too (PermissionDenied), and the call is audited as mutating.
  absl::Status Escalate(const char* method) {
    escalated_ = true;
    if (!caller_.authenticated()) return absl::OkStatus();
    return Authenticator::Authorize(*caller_.identity(), method);
  }
  // Records the call's end in the audit log when the method changes state or was refused.
  void Audit(const absl::Status& status) const {
    if (access_ == nullptr || access_->audit == nullptr) return;
    if (!IsMutating(method_) && !escalated_ && admitted_.ok()) return;
    access_->audit->Record({&caller_, peer_, method_, session_, status});
  }

 private:
  const ServiceAccess* access_ = nullptr;
  std::string peer_;
  std::string method_;
  std::string session_;
  Caller caller_;
  Credentials credentials_;  // kept so that streams re-check them (StillAdmitted)
  absl::Status admitted_;
  bool escalated_ = false;
};

}  // namespace qtrain::rpc
