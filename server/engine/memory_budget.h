// MemoryBudget: the bytes a server lets its sessions and requests hold, checked before the work
// that needs them starts, so that a request too large for the machine is answered
// RESOURCE_EXHAUSTED instead of being killed by the kernel's OOM killer (or aborting on a failed
// allocation) with every other session in the process.
//
// Callers reserve an estimate (SessionBytes, StepBytes, an upload's size) and hold the Lease for
// as long as the memory is in use. Estimates, not measurements: they are sized to err high.
// Thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "server/engine/config.h"
#include "server/engine/model.h"

namespace qtrain::engine {

inline constexpr char kHostDevice[] = "cpu:0";

class MemoryBudget {
 public:
  // `limit_bytes` <= 0: unlimited (leases are still counted). `device`: the memory it accounts
  // for ("cpu:0", host memory; "cuda:0", a GPU's).
  explicit MemoryBudget(int64_t limit_bytes, std::string device = kHostDevice)
      : limit_(limit_bytes), device_(std::move(device)) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // Returns its bytes to the budget on destruction. Move-only; the budget must outlive it.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept { *this = std::move(other); }
    Lease& operator=(Lease&& other) noexcept;
    ~Lease() { Release(); }
    int64_t bytes() const { return bytes_; }
    // Reserves `more` bytes on top (an upload growing chunk by chunk); errors as Reserve's.
    absl::Status Grow(int64_t more, absl::string_view what);
    void Release();

   private:
    friend class MemoryBudget;
    MemoryBudget* budget_ = nullptr;
    int64_t bytes_ = 0;
  };

  // ResourceExhausted naming `what`, the bytes asked for, what is free and the limit; also for
  // a negative request. `budget` may be null (no budget: an empty lease).
  static absl::StatusOr<Lease> Reserve(MemoryBudget* budget, int64_t bytes, absl::string_view what);

  int64_t limit() const { return limit_; }
  int64_t used() const { return used_.load(std::memory_order_relaxed); }
  const std::string& device() const { return device_; }

 private:
  absl::Status Take(int64_t bytes, absl::string_view what);
  const int64_t limit_;
  const std::string device_;
  std::atomic<int64_t> used_{0};
};

// A server's budgets, one per device its backends keep tensors on. Host memory ("cpu:0") always
// has one: it holds the CPU backends' tensors and every request's buffers (uploads, held-out
// batches). A device backend's memory (a GPU's) gets its own pool beside it, so that a session's
// parameters and steps are charged where they live. Devices are added before the budgets are
// shared; after that, thread-safe (the budgets are).
class DeviceBudgets {
 public:
  // The host's pool; `host_limit_bytes` as MemoryBudget's.
  explicit DeviceBudgets(int64_t host_limit_bytes);
  DeviceBudgets(const DeviceBudgets&) = delete;
  DeviceBudgets& operator=(const DeviceBudgets&) = delete;

  // Adds (or returns the existing) pool of `device`. Setup only.
  MemoryBudget* Add(const std::string& device, int64_t limit_bytes);
  // The pool of `device`; null for one without (its memory is not bounded).
  MemoryBudget* For(absl::string_view device) const;
  MemoryBudget* host() const { return budgets_.front().get(); }
  // Every pool, the host's first.
  const std::vector<std::unique_ptr<MemoryBudget>>& all() const { return budgets_; }

 private:
  std::vector<std::unique_ptr<MemoryBudget>> budgets_;
};

// 80% of the memory this process may use: the smallest of physical memory, the cgroup limit
// (memory.max, cgroup v2; memory.limit_in_bytes, v1), e.g. a container's, and the address space
// left under RLIMIT_AS (ulimit -v) beyond what the process maps already.
int64_t DefaultMemoryBudgetBytes();

// Hands memory that freed work left in the allocator's free lists back to the system (glibc's
// malloc_trim): after a refused or deleted session, so that the process does not keep the peak
// of its largest failure.
void ReturnFreedMemory();

// Estimated bytes a session holds for its lifetime: parameters, gradients, optimizer slots
// (AdamW two, momentum one, SGD none) and quantized weight copies.
int64_t SessionBytes(const ModelFootprint& footprint, const proto::OptimizerConfig& optimizer);

// Estimated bytes one step on `batch` examples holds while it runs: activations saved for the
// backward pass, their quantized copies and (training) their gradients. Saturates at INT64_MAX.
int64_t StepBytes(const ModelFootprint& footprint, int64_t batch, bool training);

// "1.5 GiB", "12.0 MiB", "512 B": for error messages.
std::string HumanBytes(int64_t bytes);

// Runs `fn` (returning absl::Status or absl::StatusOr) and answers a failed allocation inside it
// as ResourceExhausted naming `what`: the budget's estimates err high, but no request may end
// the process.
template <typename Fn>
auto OutOfMemoryAsStatus(absl::string_view what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(what, ": out of memory (lower qtrain-server --memory_budget_mb)"));
  }
}

}  // namespace qtrain::engine
