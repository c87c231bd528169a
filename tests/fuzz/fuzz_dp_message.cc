// Fuzz target: the data-parallel message decoder (server/cluster/dp_protocol.h), which reads what
// a worker rank receives from its group's leader. Any bytes decode or fail with DataLoss, never
// crash or allocate beyond the message; what decodes encodes back to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/cluster/dp_protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<qtrain::cluster::Message> m = qtrain::cluster::Decode(bytes);
  if (!m.ok()) {
    if (m.status().code() != absl::StatusCode::kDataLoss) std::abort();
    return 0;
  }
  if (qtrain::cluster::Encode(*m) != bytes) std::abort();  // the encoding is canonical
  return 0;
}
