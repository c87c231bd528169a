// A sharded safetensors checkpoint (model.safetensors.index.json and its shards, as Hugging Face's
// save_pretrained writes them) presented as one safetensors stream, so that ImportWeights can
// send it without first writing a merged copy: one header listing every tensor, then each shard's
// data region in turn. Internal to the client library.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace qtrain::client {

struct MergedSafetensors {
  std::string header;  // the 8-byte length and the JSON header, padded to 8 bytes
  struct Piece {
    std::string path;
    uint64_t offset = 0;  // of the shard's data region in its file
    uint64_t length = 0;
  };
  std::vector<Piece> pieces;  // the data, in order
};

// Reads `dir`/model.safetensors.index.json and the headers of the shards its weight_map names.
// NotFound for a missing file; InvalidArgument (naming the file and the tensor) for a malformed
// index or header, a tensor in two shards, or one the index lists that its shard lacks.
absl::StatusOr<MergedSafetensors> MergeShards(const std::string& dir);

}  // namespace qtrain::client
