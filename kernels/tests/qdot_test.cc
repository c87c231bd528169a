// Quantized dot: integer path == fake quantization, QT ≈ float gradients, STE mask, SRQ static
// scales, stochastic rounding reproducibility, oneDNN kernel choice, and failure cases.
#include "kernels/qdot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/backend/int8_kernels.h"
#include "kernels/cpu_isa.h"
#include "kernels/qdot_internal.h"
#include "kernels/tests/test_util.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;
using testing::MaxRelativeToPeak;
using testing::MeanRelativeDifference;
using testing::RandomTensor;

QDotConfig Int8Config(const char* x_method = "absmax", const char* w_method = "absmax") {
  QDotConfig c;
  c.lhs.qtype = QType::kInt8;
  c.rhs.qtype = QType::kInt8;
  c.lhs.method = *ParseCalibrationMethod(x_method);
  c.rhs.method = *ParseCalibrationMethod(w_method);
  return c;
}

struct ShapeCase {
  Shape x, w;
  int64_t tile;
  QType xq, wq;
};

class IntegerVsFakeQuantTest : public ::testing::TestWithParam<ShapeCase> {};

TEST_P(IntegerVsFakeQuantTest, ForwardAndQtBackwardAgree) {
  const ShapeCase& sc = GetParam();
  auto backend = testing::Onednn();
  Tensor x = RandomTensor(sc.x, 1);
  if (sc.xq == QType::kUint8) {
    for (float& v : x.span<float>()) {
      v = std::fabs(v);
    }
  }
  Tensor w = RandomTensor(sc.w, 2, 0.05f);
  QDotConfig c = Int8Config();
  c.lhs.qtype = sc.xq;
  c.rhs.qtype = sc.wq;
  c.tile_size = sc.tile;
  c.bwd_qtype = QType::kInt8;
  auto integer = QDotForward(*backend, x, w, c);
  ASSERT_TRUE(integer.ok()) << integer.status();
  QDotConfig fake = c;
  fake.impl = QDotImpl::kFakeQuant;
  auto reference = QDotForward(*backend, x, w, fake);
  ASSERT_TRUE(reference.ok()) << reference.status();
  EXPECT_LT(MaxRelativeToPeak(integer->y, reference->y), 2e-6);

  Tensor g = RandomTensor(integer->y.shape(), 3, 0.01f);
  auto gi = QDotBackward(*backend, x, w, g, integer->residuals, c);
  auto gf = QDotBackward(*backend, x, w, g, integer->residuals, fake);
  ASSERT_TRUE(gi.ok()) << gi.status();
  ASSERT_TRUE(gf.ok()) << gf.status();
  EXPECT_LT(MaxRelativeToPeak(gi->dx, gf->dx), 2e-6);
  EXPECT_LT(MaxRelativeToPeak(gi->dw, gf->dw), 2e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, IntegerVsFakeQuantTest,
    ::testing::Values(ShapeCase{{64, 256}, {256, 96}, 0, QType::kInt8, QType::kInt8},
                      ShapeCase{{1, 17}, {17, 5}, 0, QType::kInt8, QType::kInt8},
                      ShapeCase{{33, 1}, {1, 7}, 0, QType::kInt8, QType::kInt8},
                      ShapeCase{{8, 512}, {512, 48}, 128, QType::kInt8, QType::kInt8},
                      ShapeCase{{3, 20, 64}, {3, 64, 20}, 0, QType::kInt8, QType::kInt8},
                      ShapeCase{{16, 64}, {64, 16}, 0, QType::kInt4, QType::kInt4},
                      ShapeCase{{16, 64}, {64, 16}, 0, QType::kUint8, QType::kInt8}));

TEST(QDotTest, QuantizedResultsApproximateFloat) {
  // Qwix's own bar: int8 vs float, output <= 0.02 and gradients <= 0.03 mean relative
  // difference.
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({128, 512}, 4);
  Tensor w = RandomTensor({512, 64}, 5, 0.05f);
  Tensor g = RandomTensor({128, 64}, 6, 0.01f);
  QDotConfig fp;  // no qtypes: float
  QDotConfig qt = Int8Config();
  qt.bwd_qtype = QType::kInt8;
  auto yf = *QDotForward(*backend, x, w, fp);
  auto yq = *QDotForward(*backend, x, w, qt);
  EXPECT_LT(MeanRelativeDifference(yq.y, yf.y), 0.02);
  auto gf = *QDotBackward(*backend, x, w, g, yf.residuals, fp);
  auto gq = *QDotBackward(*backend, x, w, g, yq.residuals, qt);
  EXPECT_LT(MeanRelativeDifference(gq.dx, gf.dx), 0.03);
  EXPECT_LT(MeanRelativeDifference(gq.dw, gf.dw), 0.03);
  // ... but not equal: the backward really is quantized.
  EXPECT_GT(MeanRelativeDifference(gq.dx, gf.dx), 1e-4);
}

// untiled_lhs (tile_weights_only): x keeps one scale per row, w one per tile of 32 rows and
// column; the forward equals the dot of both fake-quantized operands, written out here.
TEST(QDotTest, UntiledLhsScalesActivationsPerRowAndWeightsPerTile) {
  auto backend = testing::Onednn();
  const int64_t m = 6, k = 64, n = 5, tile = 32;
  Tensor x = RandomTensor({m, k}, 41);
  Tensor w = RandomTensor({k, n}, 42, 0.1f);
  QDotConfig c;
  c.lhs.qtype = QType::kInt8;
  c.rhs.qtype = QType::kInt4;
  c.tile_size = tile;
  c.untiled_lhs = true;
  auto r = QDotForward(*backend, x, w, c);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->residuals.xq && r->residuals.wq);
  EXPECT_EQ(r->residuals.xq->params.scale.shape(), (Shape{m, 1}));
  EXPECT_EQ(r->residuals.wq->params.scale.shape(), (Shape{k / tile, n}));
  const float* xv = x.data<float>();
  const float* wv = w.data<float>();
  auto quant = [](float v, float scale, float lo, float hi) {
    return std::clamp(std::nearbyint(v / scale), lo, hi) * static_cast<double>(scale);
  };
  Tensor want = Tensor::Empty(DType::kF32, {m, n});
  for (int64_t i = 0; i < m; ++i) {
    float amax = 0;
    for (int64_t a = 0; a < k; ++a) amax = std::max(amax, std::fabs(xv[i * k + a]));
    const float sx = amax / 127.5f;
    for (int64_t j = 0; j < n; ++j) {
      double acc = 0;
      for (int64_t t0 = 0; t0 < k; t0 += tile) {
        float wmax = 0;
        for (int64_t a = t0; a < t0 + tile; ++a) wmax = std::max(wmax, std::fabs(wv[a * n + j]));
        const float sw = wmax / 7.5f;
        for (int64_t a = t0; a < t0 + tile; ++a) {
          acc += quant(xv[i * k + a], sx, -128, 127) * quant(wv[a * n + j], sw, -8, 7);
        }
      }
      want.data<float>()[i * n + j] = static_cast<float>(acc);
    }
  }
  EXPECT_LT(MaxRelativeToPeak(r->y, want), 1e-5);
}

TEST(QDotTest, AsymmetricGradientCalibrationMatchesFakeQuant) {
  // Zero points cannot ride on the int8 dots: the integer path must fall back, not drop them.
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({32, 64}, 20);
  Tensor w = RandomTensor({64, 16}, 21, 0.1f);
  Tensor g = RandomTensor({32, 16}, 22, 0.01f);
  for (float& v : g.span<float>()) {
    v += 0.01f;  // skewed, so minmax differs from absmax
  }
  QDotConfig c = Int8Config();
  c.bwd_qtype = QType::kInt8;
  c.bwd_method = *ParseCalibrationMethod("minmax");
  auto y = *QDotForward(*backend, x, w, c);
  auto gi = *QDotBackward(*backend, x, w, g, y.residuals, c);
  QDotConfig fake = c;
  fake.impl = QDotImpl::kFakeQuant;
  auto gf = *QDotBackward(*backend, x, w, g, y.residuals, fake);
  EXPECT_LT(MaxRelativeToPeak(gi.dx, gf.dx), 2e-6);
  EXPECT_LT(MaxRelativeToPeak(gi.dw, gf.dw), 2e-6);
}

TEST(QDotTest, WeightGradTileStaysCloseToUntiled) {
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({256, 64}, 7);
  Tensor w = RandomTensor({64, 32}, 8, 0.1f);
  Tensor g = RandomTensor({256, 32}, 9, 0.01f);
  QDotConfig c = Int8Config();
  c.bwd_qtype = QType::kInt8;
  auto y = *QDotForward(*backend, x, w, c);
  auto untiled = *QDotBackward(*backend, x, w, g, y.residuals, c);
  c.bwd_weight_grad_tile_size = 64;
  auto tiled = QDotBackward(*backend, x, w, g, y.residuals, c);
  ASSERT_TRUE(tiled.ok()) << tiled.status();
  EXPECT_LT(MeanRelativeDifference(tiled->dw, untiled.dw), 0.02);
  EXPECT_EQ(MaxRelativeToPeak(tiled->dx, untiled.dx), 0.0);  // dx is not affected
}

TEST(QDotTest, ClippedSteMasksGradientsOutsideTheRange) {
  auto backend = testing::Onednn();
  Tensor x = Tensor::FromFloats({1, 4}, {1.0f, -4.0f, 0.5f, 2.0f});  // absmax,0.5 → A = 2
  Tensor w = RandomTensor({4, 3}, 10);
  Tensor g = RandomTensor({1, 3}, 11);
  QDotConfig c = Int8Config("absmax,0.5");
  auto y = *QDotForward(*backend, x, w, c);
  auto grads = *QDotBackward(*backend, x, w, g, y.residuals, c);
  EXPECT_NE(grads.dx.data<float>()[0], 0.0f);
  EXPECT_EQ(grads.dx.data<float>()[1], 0.0f);  // |-4| > 2
  EXPECT_NE(grads.dx.data<float>()[2], 0.0f);
  EXPECT_NE(grads.dx.data<float>()[3], 0.0f);  // 2 <= 2: inclusive
  // Plain absmax never masks.
  QDotConfig plain = Int8Config();
  auto y2 = *QDotForward(*backend, x, w, plain);
  EXPECT_FALSE(y2.residuals.x_clip.has_value());
}

TEST(QDotTest, StaticCalibrationGivesOneScaleForTheBatch) {
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({4, 32}, 12);
  Tensor w = RandomTensor({32, 8}, 13);
  Calibration stat;
  stat.absmax = Tensor::FromFloats({1, 1}, {2.0f});
  QDotConfig c = Int8Config();
  c.lhs.static_calibration = &stat;
  auto y = QDotForward(*backend, x, w, c);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_TRUE(y->residuals.xq.has_value());
  EXPECT_EQ(y->residuals.xq->params.scale.numel(), 1);
  EXPECT_EQ(y->residuals.xq->params.scale.data<float>()[0], 2.0f / 127.5f);
  ASSERT_TRUE(y->x_dynamic_calibration.has_value());  // still reported for the stats
  EXPECT_EQ(y->x_dynamic_calibration->absmax.shape(), (Shape{4, 1}));
  Calibration bad;
  bad.absmax = Tensor::FromFloats({3, 1}, {1, 1, 1});
  c.lhs.static_calibration = &bad;
  EXPECT_EQ(QDotForward(*backend, x, w, c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QDotTest, StochasticRoundingIsSeededAndReproducible) {
  auto backend = testing::Onednn();
  Tensor x = RandomTensor({32, 64}, 14);
  Tensor w = RandomTensor({64, 16}, 15, 0.1f);
  Tensor g = RandomTensor({32, 16}, 16, 0.01f);
  QDotConfig c = Int8Config();
  c.bwd_qtype = QType::kInt8;
  auto y = *QDotForward(*backend, x, w, c);
  for (auto mode : {StochasticRounding::kUniform, StochasticRounding::kLowBitUniform}) {
    c.stochastic_rounding = mode;
    CounterRng a(42, 0), b(42, 0), other(43, 0);
    auto g1 = *QDotBackward(*backend, x, w, g, y.residuals, c, &a, 100);
    auto g2 = *QDotBackward(*backend, x, w, g, y.residuals, c, &b, 100);
    auto g3 = *QDotBackward(*backend, x, w, g, y.residuals, c, &other, 100);
    EXPECT_EQ(MaxRelativeToPeak(g1.dx, g2.dx), 0.0);
    EXPECT_EQ(MaxRelativeToPeak(g1.dw, g2.dw), 0.0);
    EXPECT_GT(MaxRelativeToPeak(g1.dx, g3.dx), 0.0);
  }
  EXPECT_EQ(QDotBackward(*backend, x, w, g, y.residuals, c, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QDotTest, NoiseIsUnbiased) {
  CounterRng rng(1, 2);
  double sum_uniform = 0, sum_low = 0;
  constexpr int kN = 200000;
  for (int i = 0; i < kN; ++i) {
    const float u = rng.Noise(StochasticRounding::kUniform, i);
    const float l = rng.Noise(StochasticRounding::kLowBitUniform, i);
    ASSERT_GE(u, -0.5f);
    ASSERT_LT(u, 0.5f);
    ASSERT_GT(l, -0.5f);
    ASSERT_LT(l, 0.5f);
    sum_uniform += u;
    sum_low += l;
  }
  EXPECT_NEAR(sum_uniform / kN, 0.0, 0.005);
  EXPECT_NEAR(sum_low / kN, 0.0, 0.005);
}

TEST(QDotTest, Int8MatmulRunsTheExactKernelOfTheActiveIsa) {
  // The descriptors qdot issues: untiled with both scales, tiles accumulating into dst, u8 src,
  // QT's dw (column scales only) and dx (row scales only).
  std::vector<Int8MatmulDesc> descs(6);
  descs[0].mm = MatmulDesc{256, 1024, 1024};
  descs[1].mm = MatmulDesc{256, 128, 1024};
  descs[1].mm.accumulate = true;
  descs[2].mm = MatmulDesc{256, 1024, 1024};
  descs[2].a_unsigned = true;
  descs[3].mm = MatmulDesc{1024, 256, 1024};
  descs[4].mm = MatmulDesc{32, 4096, 4096};
  descs[5].mm = MatmulDesc{1024, 1024, 1024};
  descs[5].mm.trans_b = true;  // QT's dx reads w_q transposed
  for (const auto& d : descs) {
    for (auto [row, col] : {std::pair{true, true}, {true, false}, {false, true}}) {
      auto kernel = Int8MatmulKernel(d, row, col);
      ASSERT_TRUE(kernel.ok()) << kernel.status();
      if (ActiveIsa() == Isa::kAmx) {  // AMX or VNNI brgemm, whichever oneDNN prefers
        EXPECT_THAT(*kernel, HasSubstr("onednn:brg:avx512_core_")) << "M=" << d.mm.m;
        continue;
      }
      EXPECT_EQ(*kernel, testing::ExpectedInt8Kernel())
          << "M=" << d.mm.m << " K=" << d.mm.k << " N=" << d.mm.n << " row=" << row
          << " col=" << col << " at " << IsaName(ActiveIsa());
    }
  }
}

struct BadCase {
  const char* name;
  Shape x, w;
  QDotConfig config;
  const char* error_part;
};

QDotConfig With(std::function<void(QDotConfig&)> f) {
  QDotConfig c = Int8Config();
  f(c);
  return c;
}

TEST(QDotTest, BadRequestsAreInvalidArguments) {
  const std::vector<BadCase> cases = {
      {"rank mismatch", {4, 8}, {2, 8, 3}, Int8Config(), "x (M,K)"},
      {"rank 4", {1, 2, 4, 8}, {1, 2, 8, 3}, Int8Config(), "x (M,K)"},
      {"K mismatch", {4, 8}, {9, 3}, Int8Config(), "contracting"},
      {"batch mismatch", {2, 4, 8}, {3, 8, 3}, Int8Config(), "batch"},
      {"tile", {4, 8}, {8, 3}, With([](QDotConfig& c) { c.tile_size = 3; }), "tile_size 3"},
      {"bwd tile",
       {4, 8},
       {8, 3},
       With([](QDotConfig& c) { c.bwd_weight_grad_tile_size = -1; }),
       "bwd_weight_grad_tile_size -1 is negative"},
      {"asymmetric uint8",
       {4, 8},
       {8, 3},
       With([](QDotConfig& c) {
         c.lhs.qtype = QType::kUint8;
         c.lhs.method = *ParseCalibrationMethod("minmax");
       }),
       "symmetric only"},
      {"sr fp8",
       {4, 8},
       {8, 3},
       With([](QDotConfig& c) {
         c.bwd_qtype = QType::kFloat8E4M3FN;
         c.stochastic_rounding = StochasticRounding::kUniform;
       }),
       "integer bwd_qtype"},
  };
  auto backend = testing::Onednn();
  for (const BadCase& bc : cases) {
    Tensor x = Tensor::Zeros(DType::kF32, bc.x);
    Tensor w = Tensor::Zeros(DType::kF32, bc.w);
    auto r = QDotForward(*backend, x, w, bc.config);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bc.name;
    EXPECT_THAT(r.status().message(), HasSubstr(bc.error_part)) << bc.name;
  }
  Tensor x = RandomTensor({4, 8}, 1), w = RandomTensor({8, 3}, 2);
  auto y = *QDotForward(*backend, x, w, Int8Config());
  // A QT weight-gradient tile that does not divide M fails the backward only, and says why.
  QDotConfig tiled = Int8Config();
  tiled.bwd_qtype = QType::kInt8;
  tiled.bwd_weight_grad_tile_size = 3;
  auto fwd_tiled = QDotForward(*backend, x, w, tiled);
  ASSERT_TRUE(fwd_tiled.ok()) << fwd_tiled.status();
  auto bwd_tiled =
      QDotBackward(*backend, x, w, RandomTensor({4, 3}, 3), fwd_tiled->residuals, tiled);
  EXPECT_EQ(bwd_tiled.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bwd_tiled.status().message(), HasSubstr("token dim M=4"));
  Tensor bad_g = Tensor::Zeros(DType::kF32, {4, 4});
  auto grads = QDotBackward(*backend, x, w, bad_g, y.residuals, Int8Config());
  EXPECT_EQ(grads.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(grads.status().message(), HasSubstr("[4, 4]"));
}

}  // namespace
}  // namespace qtrain

namespace qtrain::qdot_internal {
namespace {

TEST(TransposeBytesTest, MatchesTheNaiveTransposeOnRaggedShapes) {
  for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {16, 16}, {17, 33}, {3, 100}, {64, 48}, {300, 257}}) {
    std::vector<uint8_t> src(rows * cols), dst(rows * cols);
    for (size_t i = 0; i < src.size(); ++i) {
      src[i] = static_cast<uint8_t>(i * 31 + 7);
    }
    TransposeBytes(src.data(), rows, cols, dst.data());
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        ASSERT_EQ(dst[c * rows + r], src[r * cols + c])
            << rows << "x" << cols << " " << r << "," << c;
      }
    }
  }
}

}  // namespace
}  // namespace qtrain::qdot_internal
