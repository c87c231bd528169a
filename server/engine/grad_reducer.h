// GradReducer: all-reduces a data-parallel step's parameter gradients in buckets while the
// backward pass still runs (PyTorch DDP's bucketing): the backward reports each finished module,
// whose parameters' gradients are then final; once a bucket's worth of them is ready, a
// communication thread sums it across ranks while the backward goes on.
//
// Buckets hold whole parameters in the order the backward finishes them, so every rank forms the
// same buckets; Finish submits what is left in the model's parameter order. The trainer weights
// each rank's loss by its share of the global batch, so the sums are the global gradient.
// Large tensors are reduced in place; the small ones of a bucket travel packed together.
//
// Owned by one training step; ModuleDone and Finish are called from the step's thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <vector>

#include "absl/status/status.h"
#include "server/engine/collective.h"
#include "server/engine/module.h"

namespace qtrain::engine {

// What the reductions of one step cost, for metrics and benchmarks.
struct ReduceTimes {
  double reduce_seconds = 0;   // the communication thread's time in all-reduce
  double exposed_seconds = 0;  // the step's wait for it after the backward pass
  int buckets = 0;
};

class GradReducer {
 public:
  // `params`: the model's, in its order.
  GradReducer(Collective& collective, const std::vector<Param*>& params, int64_t bucket_bytes);
  ~GradReducer();  // waits for the communication thread
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // `m`'s backward has finished: its parameters' gradients are final.
  void ModuleDone(Module& m);
  // Submits the remaining parameters and waits for every bucket: the gradients are then the
  // global sums. The first reduction's error (Unavailable), if any; later buckets are skipped.
  absl::Status Finish();
  const ReduceTimes& times() const { return times_; }

 private:
  void Ready(Param* p);
  void Submit();
  void Run();
  absl::Status Reduce(const std::vector<Param*>& bucket);

  Collective& collective_;
  const std::vector<Param*> params_;
  const int64_t bucket_bytes_;
  std::unordered_set<const Param*> ready_;
  std::vector<Param*> pending_;
  int64_t pending_bytes_ = 0;
  ReduceTimes times_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::vector<Param*>> queue_;  // guarded by mu_
  bool done_ = false;                      // guarded by mu_: no more buckets
  int outstanding_ = 0;                    // guarded by mu_: queued or running buckets
  absl::Status status_;                    // guarded by mu_
  double reduce_seconds_ = 0;              // guarded by mu_
  std::thread thread_;
};

}  // namespace qtrain::engine
