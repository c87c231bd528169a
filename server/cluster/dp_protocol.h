// The messages a data-parallel session's leader sends its worker ranks over the group
// (gloo_group.h), and their byte encoding. Setup builds a rank's replica, State brings it to the
// leader's state, Train hands it a shard of a batch, Leave ends it. Only the leader sends; ranks
// answer through the step's all-reduces.
//
// The encoding is little-endian and length-prefixed; Decode checks every length against the
// message, so a corrupt message is DataLoss, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace qtrain::cluster {

enum class MessageKind : uint8_t { kSetup = 1, kState = 2, kTrain = 3, kLeave = 4 };

struct Message {
  MessageKind kind = MessageKind::kLeave;
  int64_t step = 0;     // State: the session's step
  uint64_t seed = 0;    // Setup: the session's seed
  float weight = 1.0f;  // Train: the shard's share of the global batch's examples
  // Setup: serialized ModelSpec, OptimizerConfig; State: serialized RuleSet.
  std::vector<std::string> blobs;
  // State: the trainer's state dict (Trainer::ExportState); Train: "inputs", "targets".
  std::vector<std::pair<std::string, Tensor>> tensors;
};

std::string Encode(const Message& m);
// DataLoss naming what is malformed.
absl::StatusOr<Message> Decode(const std::string& bytes);

// Rows [begin, end) of `t` along axis 0, copied.
Tensor SliceRows(const Tensor& t, int64_t begin, int64_t end);

}  // namespace qtrain::cluster
