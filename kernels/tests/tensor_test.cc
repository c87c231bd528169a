// The tensor buffer pool: freed large buffers come back to the next tensor of their size.
#include "kernels/tensor.h"

#include <gtest/gtest.h>

namespace qtrain {
namespace {

TEST(BufferPoolTest, AFreedLargeBufferServesTheNextTensorOfItsSize) {
  const void* first = nullptr;
  {
    Tensor t = Tensor::Empty(DType::kF32, {1024, 1024});  // 4 MiB
    first = t.raw();
  }
  Tensor again = Tensor::Empty(DType::kF32, {1024, 1024});
  EXPECT_EQ(again.raw(), first);
  // Same 64 KiB-rounded capacity: shared as well.
  const void* reused = again.raw();
  again = Tensor();
  Tensor nearby = Tensor::Empty(DType::kU8, {4 * 1024 * 1024 - 100});
  EXPECT_EQ(nearby.raw(), reused);
}

TEST(BufferPoolTest, TheLimitIsSetAndReported) {
  const size_t previous = SetBufferPoolLimit(0);  // frees everything cached
  EXPECT_EQ(previous, kDefaultBufferPoolBytes);
  { Tensor t = Tensor::Zeros(DType::kF32, {512, 512}); }  // freed, not kept
  EXPECT_EQ(SetBufferPoolLimit(previous), 0u);
  Tensor z = Tensor::Zeros(DType::kF32, {512, 512});
  for (float v : z.span<float>()) ASSERT_EQ(v, 0.0f);
}

}  // namespace
}  // namespace qtrain
