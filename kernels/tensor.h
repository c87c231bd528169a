// Tensor: the dense, row-major, 64-byte aligned array that kernels and the engine exchange.
//
// A Tensor owns its storage; copies are deep, moves are cheap, Share() aliases explicitly. Buffers
// of 256 KiB and more are recycled through a bounded, thread-safe process-wide pool (at most 512
// MiB kept), because fresh large allocations page-fault on first touch every training step. Element
// access is typed and checked against the dtype in debug-style invariants (QTRAIN_CHECK): a dtype
// mismatch is a programmer error, not an input error. Not thread-safe for concurrent mutation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/types/span.h"

namespace qtrain {

enum class DType : uint8_t { kF32, kS32, kS16, kS8, kU8 };

// Size in bytes of one element of `dtype`.
size_t DTypeSize(DType dtype);
// "f32", "s32", "s16", "s8", "u8".
const char* DTypeName(DType dtype);

// Freed tensor buffers of 256 KiB or more are kept for reuse by exact (64 KiB-rounded) size, up
// to this many bytes in all: a training step allocates the same sizes every step, and memory
// returned to the system page-faults back in. SetBufferPoolLimit sets the bound (lowering it frees
// the excess at once) and returns the previous one. Thread-safe.
inline constexpr size_t kDefaultBufferPoolBytes = size_t{4} << 30;
size_t SetBufferPoolLimit(size_t bytes);

// IEEE half and bfloat16 bit patterns to float (exact: f32 holds every value of both).
float HalfToFloat(uint16_t h);
float Bf16ToFloat(uint16_t b);

using Shape = std::vector<int64_t>;

// Number of elements of `shape` (1 for rank 0); INT64_MAX when the product overflows, so that
// a hostile shape fails every size limit instead of wrapping.
int64_t NumElements(const Shape& shape);
// "[2, 3, 4]".
std::string ShapeString(const Shape& shape);

template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kS32;
};
template <>
struct DTypeOf<int16_t> {
  static constexpr DType value = DType::kS16;
};
template <>
struct DTypeOf<int8_t> {
  static constexpr DType value = DType::kS8;
};
template <>
struct DTypeOf<uint8_t> {
  static constexpr DType value = DType::kU8;
};

// Where a tensor's memory lives: host memory ("cpu:0"), or a device backend's ("cuda:0"). Only
// host tensors are read and written element by element; a device tensor reaches the host through
// its backend's CopyToHost (kernels/backend/backend.h). kGuarded is the test backend's memory:
// host pages the host may not touch outside that backend's op calls (guarded_backend.h).
enum class DeviceKind : uint8_t { kHost, kCuda, kGuarded };
struct Device {
  DeviceKind kind = DeviceKind::kHost;
  int index = 0;
  bool is_host() const { return kind == DeviceKind::kHost; }
  std::string Name() const;  // "cpu:0", "cuda:1", "guarded:0"
  friend bool operator==(const Device& a, const Device& b) {
    return a.kind == b.kind && a.index == b.index;
  }
  friend bool operator!=(const Device& a, const Device& b) { return !(a == b); }
};

class Tensor {
 public:
  Tensor() = default;
  // Uninitialised host storage of the given shape.
  static Tensor Empty(DType dtype, Shape shape);
  // A tensor on `device` over `storage` (at least nbytes, freed by its deleter): how a device
  // backend's Allocate makes its tensors.
  static Tensor OnDevice(DType dtype, Shape shape, Device device,
                         std::shared_ptr<std::byte> storage);
  static Tensor Zeros(DType dtype, Shape shape);
  // A float tensor holding `values` (size must equal NumElements(shape)).
  static Tensor FromFloats(Shape shape, absl::Span<const float> values);
  // A host f32 tensor whose element i (row-major) is value(i), computed in index order: how
  // parameters are initialised and constant tables built, without a second copy.
  static Tensor Generate(Shape shape, absl::FunctionRef<float(int64_t)> value);

  // Deep copies: host tensors only (a device tensor is copied through its backend).
  Tensor(const Tensor& other);
  Tensor& operator=(const Tensor& other);
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;

  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int axis) const { return shape_[axis]; }
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * DTypeSize(dtype_); }
  bool empty() const { return buffer_ == nullptr; }
  const Device& device() const { return device_; }

  // The storage's address on its device: for the backend that owns a device tensor, and for
  // host code that moves bytes (checkpoints, the wire).
  void* raw() { return buffer_.get(); }
  const void* raw() const { return buffer_.get(); }

  // Typed element access: host tensors only (invariant).
  template <typename T>
  T* data() {
    CheckHostType(DTypeOf<T>::value);
    return reinterpret_cast<T*>(buffer_.get());
  }
  template <typename T>
  const T* data() const {
    CheckHostType(DTypeOf<T>::value);
    return reinterpret_cast<const T*>(buffer_.get());
  }
  template <typename T>
  absl::Span<T> span() {
    return absl::Span<T>(data<T>(), static_cast<size_t>(numel_));
  }
  template <typename T>
  absl::Span<const T> span() const {
    return absl::Span<const T>(data<T>(), static_cast<size_t>(numel_));
  }

  // A second handle on the same storage, without copying: for keeping a read-only reference
  // (e.g. a module's residual). Neither handle may be written while both are alive.
  Tensor Share() const;
  // Share() claiming another device: how a backend whose device memory the host can map (the
  // guarded test backend) hands its tensors to host loops inside its own op calls.
  Tensor ViewAs(Device device) const;

  // Reinterprets the same elements with another shape; NumElements must match (invariant).
  void Reshape(Shape shape);
  // Sets every byte to zero (host tensors only).
  void SetZero();

 private:
  // Returns the buffer to the process-wide pool (see tensor.cc) or frees it.
  struct FreeDeleter {
    size_t capacity;
    void operator()(std::byte* p) const;
  };
  void CheckHostType(DType expected) const;

  DType dtype_ = DType::kF32;
  Device device_;
  Shape shape_;
  int64_t numel_ = 0;
  std::shared_ptr<std::byte> buffer_;  // shared only through Share()
};

}  // namespace qtrain
