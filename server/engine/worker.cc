#include "server/engine/worker.h"

#include <algorithm>

namespace qtrain::engine {

Worker::Worker(int threads) {
  for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { Run(); });
}

Worker::~Worker() {
  {
    qtrain::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

void Worker::Post(std::function<void()> task) {
  qtrain::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
}

void Worker::Run() {
  for (;;) {
    std::function<void()> task;
    {
      qtrain::MutexLock lock(&mu_);
      mu_.Await(
          +[](Worker* w)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->mu_) { return w->stopping_ || !w->queue_.empty(); },
          this);
      if (queue_.empty()) return;  // stopping, and everything posted has run
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace qtrain::engine
