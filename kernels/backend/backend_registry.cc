#include "kernels/backend/backend_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/backend/guarded_backend.h"

namespace qtrain {

std::vector<BackendInfo> AvailableBackends() {
  return {
      {"onednn", "cpu:0",
       "oneDNN f32 ops and OpenBLAS GEMMs where faster; exact int8 kernels (oneDNN VNNI/AMX or "
       "qtrain's)",
       "cpu:0"},
      {"reference", "cpu:0", "plain loops: slow, the yardstick the other backends are tested by",
       "cpu:0"},
      {"guarded", "guarded:0",
       "for tests: the reference loops over memory the host cannot touch outside the backend's "
       "ops (finds stray host accesses; slow)",
       "cpu:0"},
  };
}

bool IsBackend(absl::string_view name) {
  for (const BackendInfo& b : AvailableBackends()) {
    if (b.name == name) return true;
  }
  return false;
}

std::string BackendMemory(absl::string_view name) {
  for (const BackendInfo& b : AvailableBackends()) {
    if (b.name == name) return b.memory;
  }
  return "";
}

std::string BackendNames() {
  return absl::StrJoin(AvailableBackends(), ", ",
                       [](std::string* out, const BackendInfo& b) { out->append(b.name); });
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name) {
  if (name == "onednn") return MakeOnednnBackend();
  if (name == "reference") return MakeReferenceBackend();
  if (name == "guarded") return MakeGuardedBackend();
  return absl::InvalidArgumentError(
      absl::StrCat("backend \"", name, "\" is not one of ", BackendNames()));
}

}  // namespace qtrain
