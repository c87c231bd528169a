// Quantized convolution: integer path == fake quantization, STE backward on dequantized
// residuals, SRQ per-example statistics, and failure cases.
#include "kernels/qconv.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <random>

#include "kernels/backend/int8_kernels.h"
#include "kernels/cpu_isa.h"
#include "kernels/tests/test_util.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;
using testing::MaxRelativeToPeak;
using testing::MeanRelativeDifference;
using testing::RandomTensor;

QConvConfig Int8Conv() {
  QConvConfig c;
  c.lhs.qtype = QType::kInt8;
  c.rhs.qtype = QType::kInt8;
  c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = 1;
  return c;
}

TEST(QConvTest, IntegerForwardEqualsFakeQuant) {
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({4, 12, 12, 8}, 1);
  Tensor w = RandomTensor({3, 3, 8, 16}, 2, 0.1f);
  QConvConfig c = Int8Conv();
  auto integer = QConvForward(*backend, x, w, c);
  ASSERT_TRUE(integer.ok()) << integer.status();
  c.impl = QDotImpl::kFakeQuant;
  auto fake = QConvForward(*backend, x, w, c);
  ASSERT_TRUE(fake.ok()) << fake.status();
  EXPECT_EQ(integer->y.shape(), (Shape{4, 12, 12, 16}));
  EXPECT_LT(MaxRelativeToPeak(integer->y, fake->y), 2e-6);
  // And close to float.
  QConvConfig fp;
  fp.pad_top = fp.pad_left = fp.pad_bottom = fp.pad_right = 1;
  auto flt = *QConvForward(*backend, x, w, fp);
  EXPECT_LT(MeanRelativeDifference(integer->y, flt.y), 0.02);
}

TEST(QConvTest, Int8ConvRunsTheExactKernelOfTheActiveIsa) {
  // 3x3 same padding, 1x1 (no im2col), strided 5x5, and full-range operands against the
  // reference backend: the int32 sums must agree exactly.
  const std::vector<ConvDesc> descs = {{2, 9, 9, 8, 16, 3, 3, 1, 1, 1, 1, 1, 1},
                                       {3, 4, 5, 32, 24, 1, 1, 1, 1, 0, 0, 0, 0},
                                       {1, 11, 11, 3, 5, 5, 5, 2, 2, 2, 1, 2, 1}};
  auto backend = testing::Onednn();
  auto ref = MakeReferenceBackend();
  std::mt19937 gen(11);
  std::uniform_int_distribution<int> dist(-128, 127);
  for (const ConvDesc& d : descs) {
    auto kernel = Int8ConvKernel(d);
    ASSERT_TRUE(kernel.ok()) << kernel.status();
    if (ActiveIsa() == Isa::kAvx2Vnni || ActiveIsa() >= Isa::kAvx512Vnni) {  // oneDNN's VNNI
      EXPECT_THAT(*kernel, HasSubstr("onednn:")) << IsaName(ActiveIsa());
      EXPECT_TRUE(OnednnInt8ImplIsExact(kernel->substr(7))) << *kernel;
    } else {
      EXPECT_EQ(*kernel, testing::ExpectedInt8Kernel()) << IsaName(ActiveIsa());
    }
    std::vector<int8_t> src(d.n * d.h * d.w * d.c), w(d.kh * d.kw * d.c * d.o);
    for (int8_t& v : src) v = static_cast<int8_t>(dist(gen));
    for (int8_t& v : w) v = static_cast<int8_t>(dist(gen));
    const int64_t out = d.n * d.out_h() * d.out_w() * d.o;
    std::vector<int32_t> got(out), want(out);
    ASSERT_TRUE(backend->ConvFwdInt8(d, src.data(), w.data(), got.data()).ok());
    ASSERT_TRUE(ref->ConvFwdInt8(d, src.data(), w.data(), want.data()).ok());
    EXPECT_EQ(got, want) << *kernel;
  }
}

TEST(QConvTest, BackwardUsesTheQuantizedResiduals) {
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({2, 6, 6, 3}, 3);
  Tensor w = RandomTensor({3, 3, 3, 4}, 4, 0.2f);
  QConvConfig c = Int8Conv();
  auto fwd = *QConvForward(*backend, x, w, c);
  Tensor g = RandomTensor(fwd.y.shape(), 5);
  auto grads = QConvBackward(*backend, g, fwd.residuals, c);
  ASSERT_TRUE(grads.ok()) << grads.status();
  // The same backward run on the reference backend with the dequantized operands.
  auto ref = MakeReferenceBackend();
  auto desc = *MakeConvDesc(x.shape(), w.shape(), c);
  Tensor dx = Tensor::Empty(DType::kF32, x.shape());
  ASSERT_TRUE(
      ref->ConvBwdData(desc, g.data<float>(), fwd.residuals.w_used.data<float>(), dx.data<float>())
          .ok());
  EXPECT_LT(MaxRelativeToPeak(grads->dx, dx), 1e-5);
  EXPECT_GT(MaxRelativeToPeak(fwd.residuals.w_used, w), 0.0);  // really quantized
}

TEST(QConvTest, PerExampleCalibrationForStatistics) {
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({3, 4, 4, 2}, 6);
  Tensor w = RandomTensor({1, 1, 2, 2}, 7);
  QConvConfig c = Int8Conv();
  c.pad_top = c.pad_left = c.pad_bottom = c.pad_right = 0;
  auto fwd = *QConvForward(*backend, x, w, c);
  ASSERT_TRUE(fwd.x_dynamic_calibration.has_value());
  EXPECT_EQ(fwd.x_dynamic_calibration->absmax.shape(), (Shape{3, 1, 1, 1}));
}

TEST(QConvTest, BadShapesAreInvalidArguments) {
  auto backend = testing::Onednn();
  QConvConfig c = Int8Conv();
  struct Case {
    Shape x, w;
    const char* part;
  };
  for (const Case& bc : std::vector<Case>{{{2, 4, 4}, {3, 3, 4, 4}, "(N,H,W,C)"},
                                          {{1, 4, 4, 3}, {3, 3, 2, 4}, "channels"},
                                          {{1, 2, 2, 1}, {7, 7, 1, 1}, "larger"}}) {
    auto r = QConvForward(*backend, Tensor::Zeros(DType::kF32, bc.x),
                          Tensor::Zeros(DType::kF32, bc.w), c);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bc.part;
    EXPECT_THAT(r.status().message(), HasSubstr(bc.part));
  }
  QConvConfig negative = c;
  negative.stride_h = 0;
  auto r = QConvForward(*backend, RandomTensor({1, 4, 4, 1}, 1), RandomTensor({3, 3, 1, 1}, 2),
                        negative);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace qtrain
