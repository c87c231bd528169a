// DataParallelLeader: a data-parallel session's group, run from its leader (rank 0) — the
// engine's StepGroup. It forms the group on the first training step: asks the first
// world_size - 1 peers to join (Cluster.JoinGroup), meets them through the rendezvous store,
// checks each rank's proof and has it build the session's model. Before a step it sends the
// leader's whole state when that changed since the ranks had it (rules, uploads, calibration,
// a re-formed group), then each rank's shard.
//
// The leader's state is the session's: a rank that fails or hangs fails the step (Unavailable,
// from the collectives' timeouts) before the leader applies any update, the group is dropped, and
// the next step forms a new one from the leader's state — a restarted rank rejoins that way.
//
// Owned by the session's Trainer; used on its executor thread only.
#pragma once

#include <map>
#include <memory>
#include <string>

#include <grpcpp/channel.h>

#include "server/cluster/cluster_options.h"
#include "server/cluster/gloo_group.h"
#include "server/engine/step_group.h"
#include "server/engine/trainer.h"

namespace qtrain::cluster {

class DataParallelLeader final : public engine::StepGroup {
 public:
  // `options` must be enabled with at least world_size - 1 peers (CheckWorldSize).
  DataParallelLeader(const ClusterOptions& options, int world_size, std::string session_id);
  ~DataParallelLeader() override;  // tells the ranks to leave

  int world_size() const override { return world_size_; }
  int64_t bucket_bytes() const override { return options_.bucket_bytes; }
  absl::StatusOr<engine::ShardedStep> Begin(engine::Trainer& trainer, const Tensor& inputs,
                                            const Tensor& targets) override;
  void End(engine::Trainer& trainer, const absl::Status& step_status) override;

 private:
  absl::Status Form(engine::Trainer& trainer);
  absl::Status SendState(engine::Trainer& trainer);
  absl::Status SendShards(const Tensor& inputs, const Tensor& targets, int64_t* leader_rows);
  void Drop();

  const ClusterOptions options_;
  const int world_size_;
  const std::string session_id_;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels_;
  std::unique_ptr<GlooGroup> group_;
  bool synced_ = false;  // the ranks hold the state below
  uint64_t synced_generation_ = 0;
  int64_t synced_step_ = 0;
  const void* synced_rules_ = nullptr;
};

// InvalidArgument naming the field when `world_size` cannot be served by `options` (no
// rendezvous, too few peers, out of range).
absl::Status CheckWorldSize(const ClusterOptions& options, int world_size);

}  // namespace qtrain::cluster
