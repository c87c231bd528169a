#include "kernels/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <new>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"

namespace qtrain {
namespace {

constexpr size_t kAlignment = 64;
constexpr size_t kMinPooledBytes = 256 << 10;

// Recycles large buffers by exact capacity. Capacities are rounded up to 64 KiB so that tensors
// of nearby sizes share buffers. A language model's step frees gigabytes that the next step
// allocates again: returned to the system, every page faults back in (a quarter of a
// Llama-shaped step), so the pool holds up to limit_ bytes.
class BufferPool {
 public:
  static BufferPool& Get() {
    static BufferPool* pool = new BufferPool();  // never destroyed: tensors may outlive main
    return *pool;
  }

  static size_t Capacity(size_t bytes) {
    if (bytes < kMinPooledBytes) return (bytes + kAlignment - 1) / kAlignment * kAlignment;
    constexpr size_t kGranule = 64 << 10;
    return (bytes + kGranule - 1) / kGranule * kGranule;
  }

  std::byte* Allocate(size_t capacity) {
    if (capacity >= kMinPooledBytes) {
      qtrain::MutexLock lock(&mu_);
      auto it = free_.find(capacity);
      if (it != free_.end()) {
        std::byte* p = it->second;
        free_.erase(it);
        cached_bytes_ -= capacity;
        return p;
      }
    }
    void* p = std::aligned_alloc(kAlignment, capacity);
    // Out of memory: an exception the step's guard turns into RESOURCE_EXHAUSTED (trainer.h),
    // never a null tensor that a kernel would write through.
    if (p == nullptr && capacity > 0) throw std::bad_alloc();
    return static_cast<std::byte*>(p);
  }

  size_t SetLimit(size_t bytes) {
    std::vector<std::byte*> drop;
    size_t previous = 0;
    {
      qtrain::MutexLock lock(&mu_);
      previous = limit_;
      limit_ = bytes;
      while (cached_bytes_ > limit_ && !free_.empty()) {  // the largest first
        auto last = std::prev(free_.end());
        cached_bytes_ -= last->first;
        drop.push_back(last->second);
        free_.erase(last);
      }
    }
    for (std::byte* p : drop) std::free(p);
    return previous;
  }

  void Release(std::byte* p, size_t capacity) {
    if (capacity >= kMinPooledBytes) {
      qtrain::MutexLock lock(&mu_);
      if (cached_bytes_ + capacity <= limit_) {
        free_.emplace(capacity, p);
        cached_bytes_ += capacity;
        return;
      }
    }
    std::free(p);
  }

 private:
  qtrain::Mutex mu_;
  std::multimap<size_t, std::byte*> free_ ABSL_GUARDED_BY(mu_);
  size_t cached_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  size_t limit_ ABSL_GUARDED_BY(mu_) = kDefaultBufferPoolBytes;
};

}  // namespace

size_t SetBufferPoolLimit(size_t bytes) { return BufferPool::Get().SetLimit(bytes); }

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  uint32_t bits;
  if (exponent == 0x1f) {
    bits = sign | 0x7f800000u | (mantissa << 13);  // infinity or NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  } else {  // zero or subnormal: exact in f32
    const float v = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -v : v;
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

float Bf16ToFloat(uint16_t b) {
  const uint32_t bits = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kS32:
      return 4;
    case DType::kS16:
      return 2;
    case DType::kS8:
    case DType::kU8:
      return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kS32:
      return "s32";
    case DType::kS16:
      return "s16";
    case DType::kS8:
      return "s8";
    case DType::kU8:
      return "u8";
  }
  return "?";
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (__builtin_mul_overflow(n, d, &n)) return std::numeric_limits<int64_t>::max();
  }
  return n;
}

std::string ShapeString(const Shape& shape) { return "[" + absl::StrJoin(shape, ", ") + "]"; }

void Tensor::FreeDeleter::operator()(std::byte* p) const { BufferPool::Get().Release(p, capacity); }

Tensor Tensor::Empty(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = NumElements(shape);
  t.shape_ = std::move(shape);
  QTRAIN_CHECK(t.numel_ >= 0);
  const size_t capacity = BufferPool::Capacity(std::max<size_t>(t.nbytes(), 1));
  t.buffer_ =
      std::shared_ptr<std::byte>(BufferPool::Get().Allocate(capacity), FreeDeleter{capacity});
  QTRAIN_CHECK(t.buffer_ != nullptr);
  return t;
}

Tensor Tensor::OnDevice(DType dtype, Shape shape, Device device,
                        std::shared_ptr<std::byte> storage) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = NumElements(shape);
  t.shape_ = std::move(shape);
  t.device_ = device;
  QTRAIN_CHECK(t.numel_ >= 0 && storage != nullptr);
  t.buffer_ = std::move(storage);
  return t;
}

std::string Device::Name() const {
  const char* kind_name = kind == DeviceKind::kHost   ? "cpu"
                          : kind == DeviceKind::kCuda ? "cuda"
                                                      : "guarded";
  return absl::StrCat(kind_name, ":", index);
}

Tensor Tensor::Zeros(DType dtype, Shape shape) {
  Tensor t = Empty(dtype, std::move(shape));
  t.SetZero();
  return t;
}

Tensor Tensor::Generate(Shape shape, absl::FunctionRef<float(int64_t)> value) {
  Tensor t = Empty(DType::kF32, std::move(shape));
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = value(i);
  return t;
}

Tensor Tensor::FromFloats(Shape shape, absl::Span<const float> values) {
  Tensor t = Empty(DType::kF32, std::move(shape));
  QTRAIN_CHECK(static_cast<int64_t>(values.size()) == t.numel());
  if (!values.empty()) std::memcpy(t.raw(), values.data(), t.nbytes());
  return t;
}

Tensor::Tensor(const Tensor& other) { *this = other; }

Tensor& Tensor::operator=(const Tensor& other) {
  if (this == &other) return *this;
  if (other.empty()) {
    *this = Tensor();
    return *this;
  }
  QTRAIN_CHECK(other.device_.is_host());
  Tensor copy = Empty(other.dtype_, other.shape_);
  std::memcpy(copy.raw(), other.raw(), other.nbytes());
  *this = std::move(copy);
  return *this;
}

Tensor Tensor::Share() const {
  Tensor t;
  t.dtype_ = dtype_;
  t.shape_ = shape_;
  t.numel_ = numel_;
  t.device_ = device_;
  t.buffer_ = buffer_;
  return t;
}

void Tensor::Reshape(Shape shape) {
  QTRAIN_CHECK(NumElements(shape) == numel_);
  shape_ = std::move(shape);
}

Tensor Tensor::ViewAs(Device device) const {
  Tensor t = Share();
  t.device_ = device;
  return t;
}

void Tensor::SetZero() {
  QTRAIN_CHECK(device_.is_host());
  if (buffer_) std::memset(buffer_.get(), 0, nbytes());
}

void Tensor::CheckHostType(DType expected) const {
  QTRAIN_CHECK(expected == dtype_ && device_.is_host());
}

}  // namespace qtrain
