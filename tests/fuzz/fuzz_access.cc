// Fuzz target: what a caller controls on an authenticated server — the session ids it sends
// (scoped to its tenant by Caller::Resolve) and its authorization header — and the access file's
// parser. The first byte picks which. Properties: a non-admin's resolved id always lies in its
// own tenant, names a path inside that tenant's directory, and survives a round trip through
// Show; a header is either a valid token's identity or UNAUTHENTICATED.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/engine/session_id.h"
#include "server/rpc/access.h"
#include "server/rpc/auth.h"
#include "server/rpc/caller.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string input(reinterpret_cast<const char*>(data) + 1, size - 1);
  using namespace qtrain;
  switch (data[0] % 3) {
    case 0: {  // a request's session_id from tenant "team-a"
      const rpc::Caller caller(rpc::Identity{"team-a", rpc::Role::kTrainer});
      for (bool creating : {false, true}) {
        absl::StatusOr<std::string> id = caller.Resolve(input, creating);
        if (!id.ok()) continue;
        if (engine::TenantOf(*id) != "team-a") std::abort();
        absl::StatusOr<engine::SessionId> parts = engine::ParseSessionId(*id, creating);
        if (!parts.ok() || parts->name.find('/') != absl::string_view::npos || parts->name == "." ||
            parts->name == "..") {
          std::abort();
        }
        if (caller.Resolve(caller.Show(*id), creating).value_or("") != *id) std::abort();
      }
      break;
    }
    case 1: {  // an authorization header, against a server without that token
      rpc::Authenticator auth(rpc::AuthOptions{nullptr, true, rpc::Role::kReader});
      absl::StatusOr<rpc::Identity> who = auth.Authenticate(input, std::nullopt);
      if (who.ok()) std::abort();  // no token is valid without an access file
      absl::StatusOr<rpc::Identity> by_cert = auth.Authenticate(std::nullopt, input);
      if (by_cert.ok() && !engine::IsValidIdPart(by_cert->tenant)) std::abort();
      break;
    }
    default: {  // the access file
      absl::StatusOr<rpc::AccessConfig> config = rpc::ParseAccessConfig(input);
      if (!config.ok()) break;
      for (const auto& [hash, who] : config->by_hash) {
        if (hash.size() != 64 || !engine::IsValidIdPart(who.tenant)) std::abort();
      }
      break;
    }
  }
  return 0;
}
