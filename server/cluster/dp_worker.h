// WorkerRanks: the data-parallel groups this server serves as a worker rank. Join (from the
// Cluster service) checks the leader's proof and starts a thread that connects to the group,
// proves its invitation, builds the session's model from the leader's Setup and then follows the
// leader's messages: state, shards to train on, leave. A rank owns no session here (nothing is
// listed, saved or counted against tenants on this server); it ends when the leader leaves, a
// collective fails, or no message comes for idle_timeout_ms.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "kernels/sync.h"
#include "server/cluster/cluster_options.h"
#include "server/engine/memory_budget.h"

namespace qtrain::cluster {

class GlooGroup;

struct JoinRequest {
  std::string group_id;
  int rank = 0;
  int world_size = 0;
  std::string proof;  // hex
  int64_t timeout_ms = 0;
  int64_t bucket_bytes = 0;
};

class WorkerRanks {
 public:
  // `budgets` (may be null: unlimited) are the server's: a rank's replica reserves from the
  // budget of its backend's device as a session does; they must outlive this.
  WorkerRanks(ClusterOptions options, const engine::DeviceBudgets* budgets);
  ~WorkerRanks();  // Shutdown()

  // Starts serving as `request.rank`. InvalidArgument naming a bad field; PermissionDenied for a
  // wrong proof or a server without a cluster secret; FailedPrecondition without a rendezvous;
  // ResourceExhausted at max_worker_groups; Unavailable after Shutdown.
  absl::Status Join(const JoinRequest& request);
  // Closes every group and joins the threads. Idempotent.
  void Shutdown();

 private:
  struct Rank;
  void Serve(Rank* rank);
  void ReapFinished() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ClusterOptions options_;
  const engine::DeviceBudgets* const budgets_;
  mutable qtrain::Mutex mu_;
  std::vector<std::unique_ptr<Rank>> ranks_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace qtrain::cluster
