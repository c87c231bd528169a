#include "server/engine/grad_reducer.h"

#include <algorithm>
#include <chrono>

#include "kernels/status_macros.h"

namespace qtrain::engine {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

GradReducer::GradReducer(Collective& collective, const std::vector<Param*>& params,
                         int64_t bucket_bytes)
    : collective_(collective),
      params_(params),
      bucket_bytes_(std::max<int64_t>(bucket_bytes, 1)),
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

absl::Status GradReducer::Reduce(const std::vector<Param*>& bucket) {
  // Tensors from this size up are reduced where they are: packing them costs two copies.
  constexpr int64_t kInPlace = 1 << 16;  // elements (256 KiB)
  std::vector<Tensor*> packed;
  for (Param* p : bucket) {
    Tensor& g = p->grad;
    if (g.numel() >= kInPlace) {
      QTRAIN_RETURN_IF_ERROR(collective_.AllReduceSum({&g}, 1.0f));
    } else {
      packed.push_back(&g);
    }
  }
  if (packed.empty()) return absl::OkStatus();
  return collective_.AllReduceSum(packed, 1.0f);
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
    if (!skip) s = Reduce(bucket);
    const double took = Seconds(start);
    lock.lock();
    reduce_seconds_ += took;
    if (status_.ok() && !s.ok()) status_ = s;
    --outstanding_;
    cv_.notify_all();
  }
}

}  // namespace qtrain::engine
