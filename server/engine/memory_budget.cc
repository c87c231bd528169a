#include "server/engine/memory_budget.h"

#include <malloc.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace qtrain::engine {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// a · b, saturating at kMax (both non-negative).
int64_t SatMul(int64_t a, int64_t b) {
  int64_t r = 0;
  return __builtin_mul_overflow(a, b, &r) ? kMax : r;
}
int64_t SatAdd(int64_t a, int64_t b) {
  int64_t r = 0;
  return __builtin_add_overflow(a, b, &r) ? kMax : r;
}

// The first number in `path`, or kMax ("max", missing, unreadable).
int64_t ReadLimit(const char* path) {
  std::ifstream in(path);
  std::string text;
  if (!(in >> text)) return kMax;
  int64_t v = 0;
  return absl::SimpleAtoi(text, &v) && v > 0 ? v : kMax;
}

}  // namespace

MemoryBudget::Lease& MemoryBudget::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    Release();
    budget_ = other.budget_;
    bytes_ = other.bytes_;
    other.budget_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void MemoryBudget::Lease::Release() {
  if (budget_ != nullptr) budget_->used_.fetch_sub(bytes_, std::memory_order_relaxed);
  budget_ = nullptr;
  bytes_ = 0;
}

absl::Status MemoryBudget::Lease::Grow(int64_t more, absl::string_view what) {
  if (budget_ == nullptr) return absl::OkStatus();
  if (absl::Status s = budget_->Take(more, what); !s.ok()) return s;
  bytes_ += more;
  return absl::OkStatus();
}

absl::Status MemoryBudget::Take(int64_t bytes, absl::string_view what) {
  if (bytes < 0) {
    return absl::ResourceExhaustedError(absl::StrCat(what, " needs more than ", HumanBytes(kMax)));
  }
  int64_t used = used_.load(std::memory_order_relaxed);
  while (true) {
    const int64_t next = SatAdd(used, bytes);
    if (limit_ > 0 && next > limit_) {
      const bool host = device_ == kHostDevice;
      return absl::ResourceExhaustedError(
          absl::StrCat(what, " needs about ", HumanBytes(bytes), "; the server's memory budget",
                       host ? "" : absl::StrCat(" of ", device_), " has ",
                       HumanBytes(std::max<int64_t>(0, limit_ - used)), " free of ",
                       HumanBytes(limit_), host ? " (qtrain-server --memory_budget_mb)" : ""));
    }
    if (used_.compare_exchange_weak(used, next, std::memory_order_relaxed)) {
      return absl::OkStatus();
    }
  }
}

DeviceBudgets::DeviceBudgets(int64_t host_limit_bytes) {
  budgets_.push_back(std::make_unique<MemoryBudget>(host_limit_bytes, kHostDevice));
}

MemoryBudget* DeviceBudgets::Add(const std::string& device, int64_t limit_bytes) {
  if (MemoryBudget* existing = For(device)) return existing;
  budgets_.push_back(std::make_unique<MemoryBudget>(limit_bytes, device));
  return budgets_.back().get();
}

MemoryBudget* DeviceBudgets::For(absl::string_view device) const {
  for (const std::unique_ptr<MemoryBudget>& b : budgets_) {
    if (b->device() == device) return b.get();
  }
  return nullptr;
}

absl::StatusOr<MemoryBudget::Lease> MemoryBudget::Reserve(MemoryBudget* budget, int64_t bytes,
                                                          absl::string_view what) {
  Lease lease;
  if (budget == nullptr) return lease;
  if (absl::Status s = budget->Take(bytes, what); !s.ok()) return s;
  lease.budget_ = budget;
  lease.bytes_ = bytes;
  return lease;
}

// RLIMIT_AS minus the address space mapped now (VmSize): the most this process can still map.
// kMax without a limit.
int64_t AddressSpaceLeft() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return kMax;
  int64_t mapped = 0;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmSize:", 0) == 0) {
      mapped = std::strtoll(line.c_str() + 7, nullptr, 10) * 1024;  // "VmSize:  1234 kB"
      break;
    }
  }
  const int64_t cap = static_cast<int64_t>(std::min<rlim_t>(limit.rlim_cur, kMax));
  return std::max<int64_t>(0, cap - mapped);
}

int64_t DefaultMemoryBudgetBytes() {
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGE_SIZE);
  int64_t total = pages > 0 && page > 0 ? SatMul(pages, page) : kMax;
  total = std::min({total, ReadLimit("/sys/fs/cgroup/memory.max"),
                    ReadLimit("/sys/fs/cgroup/memory/memory.limit_in_bytes"), AddressSpaceLeft()});
  return total / 5 * 4;
}

void ReturnFreedMemory() { malloc_trim(0); }

int64_t SessionBytes(const ModelFootprint& footprint, const proto::OptimizerConfig& optimizer) {
  int64_t slots = 2;  // AdamW (the default)
  if (optimizer.has_sgd()) slots = optimizer.sgd().momentum() != 0.0f ? 1 : 0;
  // f32 parameters, gradients and slots, plus one f32-sized copy for quantized / packed weights.
  return SatMul(footprint.parameters, 4 * (3 + slots));
}

int64_t StepBytes(const ModelFootprint& footprint, int64_t batch, bool training) {
  // Forward: each activation in f32 plus its quantized copy and scratch (2 words); training
  // adds its gradient and the backward's scratch (2 more).
  const int64_t words = training ? 4 : 2;
  return SatMul(SatMul(footprint.activations_per_example, std::max<int64_t>(batch, 0)), 4 * words);
}

std::string HumanBytes(int64_t bytes) {
  constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  double v = static_cast<double>(bytes);
  int unit = -1;
  while (v >= 1024 && unit < 5) {
    v /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s", v, kUnits[unit]);
}

}  // namespace qtrain::engine
