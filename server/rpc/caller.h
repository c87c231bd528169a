// Caller: who made a call and which sessions it may see. With authentication on (auth.h) every
// session id a client sends is scoped to its tenant: "run1" from tenant "team-a" is the engine's
// "team-a/run1" (engine/session_id.h), and answers show it back as "run1". Another tenant's
// session is NOT_FOUND, exactly like one that does not exist. Admins see every tenant and address
// other tenants' sessions as "TENANT/NAME", and sessions without a tenant (made while the server
// ran without authentication) as "/NAME". Without authentication ids pass through unchanged.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/rpc/access.h"

namespace qtrain::rpc {

class Caller {
 public:
  // No authentication: every session, ids unchanged.
  Caller() = default;
  explicit Caller(Identity identity) : identity_(std::move(identity)) {}

  // The engine id of a request's session_id. `creating`: "" (a generated name) is allowed.
  // NotFound for a session of another tenant (non-admins); InvalidArgument for a malformed id.
  absl::StatusOr<std::string> Resolve(const std::string& requested, bool creating = false) const;
  // The engine id `id` as this caller names it.
  std::string Show(const std::string& id) const;
  // Whether the caller may see the session `id` at all (ListSessions).
  bool Sees(const std::string& id) const;

  bool authenticated() const { return identity_.has_value(); }
  // "" without authentication.
  const std::string& tenant() const;
  // The label and audit value: the tenant, or "-" without authentication.
  std::string TenantLabel() const;
  std::optional<Identity> identity() const { return identity_; }

 private:
  std::optional<Identity> identity_;
};

}  // namespace qtrain::rpc
