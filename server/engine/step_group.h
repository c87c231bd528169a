// StepGroup: the ranks of a data-parallel session, as its leader's Trainer sees them. The leader
// splits each training batch along the batch axis; the group hands every other rank its shard
// (after the leader's state, when the ranks may not hold it), and the step's reductions run on
// the group's Collective. server/cluster implements it on Gloo and gRPC.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/collective.h"

namespace qtrain::engine {

class Trainer;

// Rank 0's part of a global batch, and what its step reduces with.
struct ShardedStep {
  Tensor inputs;
  Tensor targets;
  Collective* collective = nullptr;  // owned by the group; valid until End
  float shard_weight = 1.0f;         // this shard's examples / the global batch's
};

class StepGroup {
 public:
  virtual ~StepGroup() = default;
  virtual int world_size() const = 0;
  // Forms the group when it has none (or a broken one), brings every rank to `trainer`'s state
  // when that changed since the ranks last had it, and sends each rank its shard of the
  // validated batch (inputs, targets). Unavailable naming the rank that cannot be reached;
  // nothing has changed anywhere then.
  virtual absl::StatusOr<ShardedStep> Begin(Trainer& trainer, const Tensor& inputs,
                                            const Tensor& targets) = 0;
  // After the leader's step: `step_status` not ok breaks the group when it came from a
  // collective (Unavailable); the next Begin re-forms it. `trainer` has the step's outcome.
  virtual void End(Trainer& trainer, const absl::Status& step_status) = 0;
  // The bucket size of the gradient all-reduce.
  virtual int64_t bucket_bytes() const = 0;
};

// Makes the group of a new or restored session with `world_size` ranks (> 1). InvalidArgument
// naming data_parallel.world_size when the server cannot serve it.
using StepGroupFactory = std::function<absl::StatusOr<std::unique_ptr<StepGroup>>(
    const std::string& session_id, int world_size)>;

}  // namespace qtrain::engine
