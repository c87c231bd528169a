// TenantQuotas: the per-tenant limits of an authenticated server (access.h): sessions, total
// parameters and concurrent streams, and checkpoint bytes on disk (enforced by the store at
// each save: SessionStore::Save's `disk_limit`). A session counts against the tenant that owns
// it (engine/session_id.h), also when an admin creates it. Sessions without a tenant (a server
// without authentication) have only the server-wide limits.
//
// Errors are ResourceExhausted naming the limit, the tenant, the current use and what was asked.
// Thread-safe. Sessions and parameters are reserved where sessions are created (ReserveNewSession
// until the session is registered or abandoned), so two concurrent creations cannot both pass
// the last free slot.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "kernels/sync.h"
#include "server/engine/session.h"
#include "server/rpc/access.h"

namespace qtrain::rpc {

class TenantQuotas {
 public:
  // `access` (may be null: only `defaults`) gives per-tenant overrides. Not owned.
  TenantQuotas(AccessFile* access, TenantQuota defaults, const engine::SessionManager* sessions)
      : access_(access), defaults_(defaults), sessions_(sessions) {}

  // The limits of `tenant` ("" : none).
  TenantQuota QuotaOf(const std::string& tenant) const;

  // Before registering the new session `id` of `parameters` (CreateSession, an upload into a
  // new id): its tenant's session count and parameter total, counting the sessions other calls
  // are creating. On success the slot is held until ReleaseNewSession(id), which the creator
  // calls once the session is registered (or abandoned).
  absl::Status ReserveNewSession(const std::string& id, int64_t parameters);
  void ReleaseNewSession(const std::string& id);

  // A stream on a session of `tenant` starts / ends.
  absl::Status AcquireStream(const std::string& tenant);
  void ReleaseStream(const std::string& tenant);

 private:
  AccessFile* access_;
  const TenantQuota defaults_;
  const engine::SessionManager* sessions_;
  qtrain::Mutex mu_;
  std::map<std::string, int64_t> streams_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> pending_ ABSL_GUARDED_BY(mu_);  // id -> parameters
};

// ResourceExhausted: "tenant \"t\" has <use> <what> (quota <limit> <flag/file key>)...".
absl::Status QuotaError(const std::string& tenant, const char* what, int64_t use, int64_t asked,
                        int64_t limit, const char* key);

}  // namespace qtrain::rpc
