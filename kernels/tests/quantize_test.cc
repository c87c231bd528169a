// Qtypes, calibration parsing, layouts and quantize/dequantize beyond the golden vectors:
// every rank 1–4, tiles, noise, and table-driven failure cases.
#include <cmath>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "kernels/calibration.h"
#include "kernels/quantize.h"
#include "kernels/srq.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

TEST(QTypeTest, BoundsAndRanges) {
  EXPECT_EQ(GetQTypeInfo(QType::kInt8).bound, 127.5f);
  EXPECT_EQ(GetQTypeInfo(QType::kInt4).bound, 7.5f);
  EXPECT_EQ(GetQTypeInfo(QType::kInt2).qmin, -2.0f);
  EXPECT_EQ(GetQTypeInfo(QType::kInt2).qmax, 1.0f);
  EXPECT_EQ(GetQTypeInfo(QType::kInt16).bound, 32768.0f);
  EXPECT_EQ(GetQTypeInfo(QType::kUint8).qmax, 255.0f);
  EXPECT_EQ(ConvertValue(INFINITY, QType::kInt8), 127.0f);
  EXPECT_EQ(ConvertValue(-INFINITY, QType::kInt8), -128.0f);
  EXPECT_EQ(ConvertValue(-3.0f, QType::kUint8), 0.0f);
  EXPECT_TRUE(std::isnan(ConvertValue(NAN, QType::kInt8)));
}

TEST(QTypeTest, Float8Grid) {
  EXPECT_EQ(RoundToFloat8E4M3FN(1000.0f), 448.0f);
  EXPECT_EQ(RoundToFloat8E4M3FN(0x1p-9f), 0x1p-9f);  // smallest subnormal
  EXPECT_EQ(RoundToFloat8E4M3FN(0x1p-10f), 0.0f);    // tie to even (0)
  EXPECT_EQ(RoundToFloat8E4M3FN(1.0625f), 1.0f);     // tie to even
  EXPECT_EQ(RoundToFloat8E5M2(1e6f), 57344.0f);
  EXPECT_EQ(RoundToFloat8E5M2(0x1p-16f), 0x1p-16f);        // smallest subnormal
  EXPECT_TRUE(std::signbit(RoundToFloat8E4M3FN(-1e-6f)));  // keeps the sign of zero
}

TEST(QTypeTest, ParseIsCaseInsensitiveAndNamesBadValues) {
  EXPECT_EQ(*ParseQType("INT8"), QType::kInt8);
  EXPECT_EQ(*ParseQType("float8_e4m3fn"), QType::kFloat8E4M3FN);
  auto bad = ParseQType("int9");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("\"int9\""));
}

struct MethodCase {
  const char* text;
  bool ok;
  const char* error_part;
};

class MethodParseTest : public ::testing::TestWithParam<MethodCase> {};

TEST_P(MethodParseTest, ParsesOrNamesTheProblem) {
  const MethodCase& c = GetParam();
  auto m = ParseCalibrationMethod(c.text);
  EXPECT_EQ(m.ok(), c.ok) << c.text << ": " << m.status();
  if (!c.ok) {
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr(c.error_part));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, MethodParseTest,
    ::testing::Values(MethodCase{"absmax", true, ""}, MethodCase{"AbsMax,0.5", true, ""},
                      MethodCase{"minmax,0.9", true, ""}, MethodCase{"rms,3", true, ""},
                      MethodCase{"fixed,-1,3", true, ""}, MethodCase{"fixed,2", true, ""},
                      MethodCase{"median,50", false, "unknown method"},
                      MethodCase{"rms", false, "exactly one argument"},
                      MethodCase{"absmax,1,2", false, "at most one argument"},
                      MethodCase{"absmax,abc", false, "\"abc\" is not a finite number"},
                      MethodCase{"absmax,nan", false, "not a finite number"},
                      MethodCase{"absmax,-1", false, "k must be > 0"},
                      MethodCase{"fixed,3,1", false, "a < b"},
                      MethodCase{"fixed,-2", false, "a > 0"},
                      MethodCase{"fixed", false, "one or two arguments"},
                      MethodCase{"", false, "unknown method"}));

TEST(CalibrationTest, ClipsAndSymmetry) {
  EXPECT_FALSE(ParseCalibrationMethod("absmax")->Clips());
  EXPECT_TRUE(ParseCalibrationMethod("absmax,0.9")->Clips());
  EXPECT_FALSE(ParseCalibrationMethod("minmax,1")->Clips());
  EXPECT_TRUE(ParseCalibrationMethod("rms,3")->Clips());
  EXPECT_TRUE(ParseCalibrationMethod("fixed,1")->Clips());
  EXPECT_TRUE(ParseCalibrationMethod("fixed,-1,1")->IsSymmetric());
  EXPECT_FALSE(ParseCalibrationMethod("fixed,-1,3")->IsSymmetric());
}

TEST(CalibrationTest, AsymmetricNeedsASupportingQType) {
  auto minmax = *ParseCalibrationMethod("minmax");
  EXPECT_TRUE(ValidateQTypeMethod(QType::kInt8, minmax).ok());
  EXPECT_TRUE(ValidateQTypeMethod(QType::kInt4, minmax).ok());
  for (QType q : {QType::kUint8, QType::kInt3, QType::kFloat8E4M3FN}) {
    absl::Status s = ValidateQTypeMethod(q, minmax);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << QTypeName(q);
    EXPECT_THAT(s.message(), HasSubstr(QTypeName(q)));
  }
}

struct LayoutCase {
  Shape shape;
  ReduceSpec spec;
  bool ok;
  Shape scale_shape;
  const char* error_part;
};

class LayoutTest : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(LayoutTest, ScaleShapeOrError) {
  const LayoutCase& c = GetParam();
  auto l = MakeScaleLayout(c.shape, c.spec);
  ASSERT_EQ(l.ok(), c.ok) << l.status();
  if (c.ok) {
    EXPECT_EQ(l->scale_shape, c.scale_shape);
  } else {
    EXPECT_EQ(l.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(l.status().message(), HasSubstr(c.error_part));
  }
}

INSTANTIATE_TEST_SUITE_P(
    Table, LayoutTest,
    ::testing::Values(LayoutCase{{7}, {{0}}, true, {1}, ""},
                      LayoutCase{{4, 6}, {{1}}, true, {4, 1}, ""},
                      LayoutCase{{4, 6}, {{-2}}, true, {1, 6}, ""},
                      LayoutCase{{2, 3, 8}, {{2}, 2, 4}, true, {2, 3, 2}, ""},
                      LayoutCase{{2, 3, 4, 5}, {{1, 2, 3}}, true, {2, 1, 1, 1}, ""},
                      LayoutCase{{2, 3, 4, 5}, {{0, 1, 2}}, true, {1, 1, 1, 5}, ""},
                      LayoutCase{{2, 3, 4, 5, 6}, {{0}}, false, {}, "rank 5"},
                      LayoutCase{{4, 6}, {{2}}, false, {}, "out of range"},
                      LayoutCase{{4, 6}, {{1, 1}}, false, {}, "repeated"},
                      LayoutCase{{4, 6}, {{1}, 1, 4}, false, {}, "does not divide"},
                      LayoutCase{{4, 6}, {{1}, 0, 2}, false, {}, "not a reduced axis"},
                      LayoutCase{{4, 0}, {{1}}, false, {}, "dimension <= 0"}));

// Generic loops (every element's scale looked up by index) as the reference for the row loops.
Tensor NaiveDequantized(const Tensor& x, const ScaleLayout& l, const QuantParams& p, QType q) {
  Tensor out = x;
  const float* s = p.scale.data<float>();
  int64_t off = 0;
  for (int64_t a = 0; a < l.dims[0]; ++a) {
    for (int64_t b = 0; b < l.dims[1]; ++b) {
      for (int64_t c = 0; c < l.dims[2]; ++c) {
        for (int64_t d = 0; d < l.dims[3]; ++d, ++off) {
          const int64_t i = p.scale.numel() == 1 ? 0 : l.ScaleIndex(a, b, c, d);
          const float zp = p.symmetric() ? 0.0f : p.zero_point.data<float>()[i];
          const float v = ConvertValue(x.data<float>()[off] / s[i] + zp, q);
          out.data<float>()[off] = (v - zp) * s[i];
        }
      }
    }
  }
  return out;
}

TEST(QuantizeTest, EveryRankAndLayoutMatchesTheNaiveLoop) {
  std::mt19937 gen(7);
  std::normal_distribution<float> dist;
  const std::vector<std::pair<Shape, ReduceSpec>> cases = {
      {{33}, {{0}}},
      {{5, 17}, {{1}}},
      {{5, 17}, {{0}}},
      {{3, 4, 256}, {{2}, 2, 128}},
      {{3, 4, 9}, {{0, 2}}},
      {{2, 3, 4, 5}, {{1, 2, 3}}},
      {{2, 3, 4, 5}, {{0, 1, 2}}},
      {{2, 3, 4, 6}, {{0, 3}, 3, 2}},
  };
  for (const auto& [shape, spec] : cases) {
    for (const char* method : {"absmax", "minmax", "rms,2", "absmax,0.7"}) {
      for (QType q : {QType::kInt8, QType::kInt4, QType::kInt16}) {
        Tensor x = Tensor::Empty(DType::kF32, shape);
        for (float& v : x.span<float>()) {
          v = dist(gen);
        }
        auto m = *ParseCalibrationMethod(method);
        auto l = *MakeScaleLayout(shape, spec);
        auto p = ComputeQuantParams(Calibrate(x, l, m, q), q);
        ASSERT_TRUE(p.ok());
        auto qt = Quantize(x, l, *p, q);
        ASSERT_TRUE(qt.ok()) << qt.status();
        const Tensor got = Dequantize(*qt);
        const Tensor want = NaiveDequantized(x, l, *p, q);
        for (int64_t i = 0; i < x.numel(); ++i) {
          ASSERT_EQ(got.data<float>()[i], want.data<float>()[i])
              << ShapeString(shape) << " " << method << " " << QTypeName(q) << " at " << i;
        }
      }
    }
  }
}

TEST(QuantizeTest, ZeroTensorUsesTheScaleGuard) {
  Tensor x = Tensor::Zeros(DType::kF32, {2, 3});
  auto qt = QuantizeDynamic(x, ReduceSpec{{1}}, QType::kInt8, CalibrationMethod{});
  ASSERT_TRUE(qt.ok());
  EXPECT_EQ(qt->params.scale.data<float>()[0], 1.0f);
}

TEST(QuantizeTest, NoiseShiftsRoundingAndIsRejectedForFp8) {
  Tensor x = Tensor::FromFloats({1, 4}, {0.4f, 0.4f, 0.4f, 127.5f});
  auto l = *MakeScaleLayout(x.shape(), ReduceSpec{{1}});
  auto p = *ComputeQuantParams(Calibrate(x, l, CalibrationMethod{}, QType::kInt8), QType::kInt8);
  Tensor noise = Tensor::FromFloats({1, 4}, {0.0f, 0.2f, -0.45f, 0.4f});
  auto qt = Quantize(x, l, p, QType::kInt8, RoundingNoise{&noise});
  ASSERT_TRUE(qt.ok());
  const Tensor v = QValuesAsFloat(*qt);
  EXPECT_EQ(v.data<float>()[0], 0.0f);
  EXPECT_EQ(v.data<float>()[1], 1.0f);    // 0.4 + 0.2 rounds up
  EXPECT_EQ(v.data<float>()[2], 0.0f);    // -0.05 rounds to 0
  EXPECT_EQ(v.data<float>()[3], 127.0f);  // saturates
  auto fp8 =
      Quantize(x, l,
               *ComputeQuantParams(Calibrate(x, l, CalibrationMethod{}, QType::kFloat8E4M3FN),
                                   QType::kFloat8E4M3FN),
               QType::kFloat8E4M3FN, RoundingNoise{&noise});
  EXPECT_EQ(fp8.status().code(), absl::StatusCode::kInvalidArgument);
  Tensor bad_noise = Tensor::Zeros(DType::kF32, {1, 3});
  EXPECT_EQ(Quantize(x, l, p, QType::kInt8, RoundingNoise{&bad_noise}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QuantizeTest, RejectsNonFloatInputAndMismatchedScales) {
  Tensor x = Tensor::Zeros(DType::kS8, {2, 3});
  auto l = *MakeScaleLayout({2, 3}, ReduceSpec{{1}});
  QuantParams p{Tensor::FromFloats({2, 1}, {1, 1}), Tensor()};
  EXPECT_EQ(Quantize(x, l, p, QType::kInt8).status().code(), absl::StatusCode::kInvalidArgument);
  Tensor xf = Tensor::Zeros(DType::kF32, {2, 3});
  QuantParams wrong{Tensor::FromFloats({3, 1}, {1, 1, 1}), Tensor()};
  EXPECT_EQ(Quantize(xf, l, wrong, QType::kInt8).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SrqTest, CountZeroIsAPreconditionFailure) {
  SrqStat s = MakeSrqStat({1, 1}, true);
  auto c = SrqCalibration(s, QType::kInt8);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(SrqTest, NoUpdateUsesDynamicUntilCounted) {
  SrqStat s = MakeSrqStat({1, 1}, true);
  Calibration dyn;
  dyn.absmax = Tensor::FromFloats({2, 1}, {1.0f, 3.0f});
  auto used = SrqObserve(s, dyn, {0}, /*update=*/false);
  ASSERT_TRUE(used.ok());
  ASSERT_EQ(used->absmax.shape(), (Shape{2, 1}));  // the dynamic, per-row calibration
  EXPECT_EQ(used->absmax.data<float>()[0], 1.0f);
  EXPECT_EQ(used->absmax.data<float>()[1], 3.0f);
  EXPECT_EQ(s.count, 0);
  auto counted = SrqObserve(s, dyn, {0}, /*update=*/true);
  ASSERT_TRUE(counted.ok());
  EXPECT_EQ(counted->absmax.shape(), (Shape{1, 1}));
  EXPECT_EQ(counted->absmax.data<float>()[0], 2.0f);
}

TEST(SrqTest, ShapeChangeSuggestsBatchAxes) {
  SrqStat s = MakeSrqStat({1, 8, 1}, true);
  Calibration dyn;
  dyn.absmax = Tensor::Zeros(DType::kF32, {2, 16, 1});
  auto used = SrqObserve(s, dyn, {0}, true);
  EXPECT_EQ(used.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(used.status().message(), HasSubstr("(0, 1)"));
  EXPECT_EQ(s.count, 0);  // a bad batch changes nothing
}

}  // namespace
}  // namespace qtrain
