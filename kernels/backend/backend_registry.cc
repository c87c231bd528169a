#include "kernels/backend/backend_registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qtrain {

std::vector<BackendInfo> AvailableBackends() {
  return {
      {"onednn", "cpu:0",
       "oneDNN f32 ops and OpenBLAS GEMMs where faster; exact int8 kernels (oneDNN VNNI/AMX or "
       "qtrain's)"},
      {"reference", "cpu:0", "plain loops: slow, the yardstick the other backends are tested by"},
  };
}

absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name) {
  if (name == "onednn") return MakeOnednnBackend();
  if (name == "reference") return MakeReferenceBackend();
  std::vector<std::string> names;
  for (const BackendInfo& b : AvailableBackends()) names.push_back(b.name);
  return absl::InvalidArgumentError(
      absl::StrCat("backend \"", name, "\" is not one of ", absl::StrJoin(names, ", ")));
}

}  // namespace qtrain
