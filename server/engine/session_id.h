// Session ids. A session belongs to a tenant when its id is "TENANT/NAME" (servers with
// authentication scope every id to the caller's tenant: rpc/auth.h); servers without it use bare
// "NAME"s. Each part is 1 to 64 of [A-Za-z0-9_-]: safe as a file or directory name (no "..", no
// separators), so the data dir can keep tenants apart on disk.
#pragma once

#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace qtrain::engine {

struct SessionId {
  absl::string_view tenant;  // empty: no tenant
  absl::string_view name;
};

// True for 1 to 64 of [A-Za-z0-9_-].
bool IsValidIdPart(absl::string_view part);

// Splits and validates an id. `allow_empty_name`: "" or "TENANT/" (CreateSession picks the name).
// InvalidArgument naming the id and the rule it breaks.
absl::StatusOr<SessionId> ParseSessionId(absl::string_view id, bool allow_empty_name = false);

// The tenant part of a valid id ("" when it has none).
absl::string_view TenantOf(absl::string_view id);

// "TENANT/NAME", or NAME when `tenant` is empty.
std::string JoinSessionId(absl::string_view tenant, absl::string_view name);

}  // namespace qtrain::engine
