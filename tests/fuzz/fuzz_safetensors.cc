// Fuzz target: the safetensors parser (every checkpoint byte a client uploads goes through it).
// Property: a file that parses serializes back to bytes that parse to the same tensors.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "server/store/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using qtrain::store::ParseSafetensors;
  absl::StatusOr<qtrain::store::SafetensorsFile> file =
      ParseSafetensors(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!file.ok()) return 0;
  const std::string bytes = qtrain::store::SerializeSafetensors(*file);
  absl::StatusOr<qtrain::store::SafetensorsFile> again = ParseSafetensors(bytes);
  if (!again.ok() || again->metadata != file->metadata ||
      again->tensors.size() != file->tensors.size()) {
    std::abort();
  }
  for (const auto& [name, t] : file->tensors) {
    const qtrain::Tensor& u = again->tensors.at(name);
    if (u.dtype() != t.dtype() || u.shape() != t.shape() || u.nbytes() != t.nbytes() ||
        std::memcmp(u.raw(), t.raw(), t.nbytes()) != 0) {
      std::abort();
    }
  }
  return 0;
}
