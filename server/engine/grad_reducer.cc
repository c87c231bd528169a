#include "server/engine/grad_reducer.h"

#include <algorithm>
#include <chrono>
#include <cstring>

namespace qtrain::engine {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

GradReducer::GradReducer(Collective& collective, const std::vector<Param*>& params,
                         int64_t bucket_bytes, float weight)
    : collective_(collective),
      params_(params),
      bucket_bytes_(std::max<int64_t>(bucket_bytes, 1)),
      weight_(weight),
      thread_([this] { Run(); }) {}

GradReducer::~GradReducer() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void GradReducer::ModuleDone(Module& m) {
  std::vector<Param*> mine;
  m.CollectParams(&mine);
  for (Param* p : mine) Ready(p);
}

void GradReducer::Ready(Param* p) {
  if (!ready_.insert(p).second) return;
  pending_.push_back(p);
  pending_bytes_ += p->grad.numel() * static_cast<int64_t>(sizeof(float));
  if (pending_bytes_ >= bucket_bytes_) Submit();
}

void GradReducer::Submit() {
  if (pending_.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(std::move(pending_));
    ++outstanding_;
  }
  ++times_.buckets;
  pending_.clear();
  pending_bytes_ = 0;
  cv_.notify_all();
}

absl::Status GradReducer::Finish() {
  for (Param* p : params_) Ready(p);
  Submit();
  const auto start = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return outstanding_ == 0; });
  times_.exposed_seconds = Seconds(start);
  times_.reduce_seconds = reduce_seconds_;
  return status_;
}

void GradReducer::Run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return done_ || !queue_.empty(); });
    if (queue_.empty()) return;
    std::vector<Param*> bucket = std::move(queue_.front());
    queue_.pop_front();
    const bool skip = !status_.ok();  // every later bucket fails as well: do not wait for it
    lock.unlock();
    absl::Status s;
    const auto start = std::chrono::steady_clock::now();
    if (!skip) {
      if (bucket.size() == 1) {  // one tensor: reduced in place
        Tensor& g = bucket[0]->grad;
        s = collective_.AllReduceSum(g.data<float>(), g.numel(), weight_);
      } else {
        int64_t n = 0;
        for (const Param* p : bucket) n += p->grad.numel();
        flat_.resize(static_cast<size_t>(n));
        float* at = flat_.data();
        for (const Param* p : bucket) {
          std::memcpy(at, p->grad.data<float>(), p->grad.numel() * sizeof(float));
          at += p->grad.numel();
        }
        s = collective_.AllReduceSum(flat_.data(), n, weight_);
        at = flat_.data();
        for (Param* p : bucket) {
          std::memcpy(p->grad.data<float>(), at, p->grad.numel() * sizeof(float));
          at += p->grad.numel();
        }
      }
    }
    const double took = Seconds(start);
    lock.lock();
    reduce_seconds_ += took;
    if (status_.ok() && !s.ok()) status_ = s;
    --outstanding_;
    cv_.notify_all();
  }
}

}  // namespace qtrain::engine
