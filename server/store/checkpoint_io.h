// Durable checkpoint files: safetensors bytes with a CRC-32 of the tensor data in the metadata
// ("qtrain.crc32"), written through a temporary file, fsync'd and renamed so that a crash leaves
// either the old file or the new one, never a torn one.
//
// Thread-safe as long as two callers do not write the same path at once.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/store/safetensors.h"

namespace qtrain::store {

inline constexpr char kChecksumKey[] = "qtrain.crc32";

// Serializes `file` with its checksum added to the metadata (also stored in `*crc32` when
// non-null).
std::string EncodeCheckpoint(SafetensorsFile file, std::string* crc32 = nullptr);
// Parses and, when the checksum key is present, verifies it (DataLoss on mismatch). Files
// without the key (written by other tools) load unverified.
absl::StatusOr<SafetensorsFile> DecodeCheckpoint(absl::string_view bytes);

// Writes `bytes` to `path` atomically and durably: `path`.tmp, fsync, rename, fsync of the
// directory. Internal / ResourceExhausted (disk full) errors name the path and errno text.
absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes);
// Reads a whole file of at most `max_bytes`. NotFound, ResourceExhausted (too large), Internal.
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, uint64_t max_bytes);

}  // namespace qtrain::store
