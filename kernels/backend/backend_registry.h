// The backends a server can run sessions on, by name: the server's --backend picks the default,
// a session's CreateSessionRequest.backend its own. A new backend (a GPU one) adds itself to
// AvailableBackends() and MakeBackend(); docs/architecture.md says what else it implements.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend/backend.h"

namespace qtrain {

inline constexpr char kDefaultBackend[] = "onednn";

struct BackendInfo {
  std::string name;         // "onednn", "reference"
  std::string device;       // where its tensors live: "cpu:0"
  std::string description;  // one line for `qtrain info`
  // The memory pool its allocations are charged to: its device's, or the host's for a device
  // whose memory is host memory (the guarded test backend's).
  std::string memory;
};

// Every backend this build can make, the default first.
std::vector<BackendInfo> AvailableBackends();

// Whether `name` is one of them, and their names as error messages list them ("onednn,
// reference").
bool IsBackend(absl::string_view name);
// The memory pool (MemoryBudget device) backend `name` allocates from; "" for an unknown name.
std::string BackendMemory(absl::string_view name);
std::string BackendNames();

// A new instance of backend `name` (owned by one executor thread at a time). InvalidArgument
// naming the value and the available ones for an unknown name; the backend's own errors
// (Internal when oneDNN cannot make a CPU engine).
absl::StatusOr<std::unique_ptr<Backend>> MakeBackend(absl::string_view name);

}  // namespace qtrain
