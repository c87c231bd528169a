// Worker: threads that run closures, started in submission order. The gRPC layer hands it the
// control-plane work that must not run on gRPC threads: building and initialising a model
// (CreateSession, an upload into a new id), decoding a checkpoint, and joining a deleted
// session's executor (which waits for its queued steps). With several threads one long build
// does not hold up the calls queued behind it; tasks that must not overlap need their own order
// (SessionManager reserves ids, TenantQuotas reserves quota).
//
// Thread-safe. The destructor runs what was queued, then joins.
#pragma once

#include <deque>
#include <functional>
#include <thread>
#include <vector>

#include "kernels/sync.h"

namespace qtrain::engine {

class Worker {
 public:
  explicit Worker(int threads = 1);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Queues `task`; it always runs (before the destructor returns).
  void Post(std::function<void()> task);

 private:
  void Run();

  qtrain::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace qtrain::engine
