// numerics.md §9 calibrators beyond the golden vectors: parsing and its errors, canonical
// strings, and the entropy histogram's edge cases (zeros first, range doubling, no candidate).
#include <cmath>

#include <gtest/gtest.h>

#include "kernels/calibration.h"
#include "kernels/entropy_calibration.h"
#include "kernels/srq.h"

namespace qtrain {
namespace {

TEST(CalibrationExtTest, ParsesAndPrintsTheExtensions) {
  for (const char* text :
       {"percentile,99.9", "percentile,100", "mse", "mse,16", "entropy", "entropy,64"}) {
    absl::StatusOr<CalibrationMethod> m = ParseCalibrationMethod(text);
    ASSERT_TRUE(m.ok()) << text << ": " << m.status();
    EXPECT_EQ(m->ToString(), text);
    EXPECT_TRUE(m->IsSymmetric()) << text;
  }
  EXPECT_EQ(ParseCalibrationMethod("MSE,64")->ToString(), "mse");
  EXPECT_FALSE(ParseCalibrationMethod("percentile,100")->Clips());  // = absmax
  EXPECT_TRUE(ParseCalibrationMethod("percentile,99")->Clips());
  for (const char* bad :
       {"percentile", "percentile,0", "percentile,100.5", "percentile,-1", "percentile,1,2",
        "mse,0", "mse,1.5", "mse,1,2", "entropy,1", "entropy,2.5"}) {
    absl::StatusOr<CalibrationMethod> m = ParseCalibrationMethod(bad);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(m.status().message().find(bad), std::string::npos) << m.status();
  }
}

TEST(CalibrationExtTest, PercentileAndMseLeaveNonFiniteValuesOut) {
  const Tensor x = Tensor::FromFloats({1, 6}, {NAN, 1.0f, -2.0f, INFINITY, 0.5f, -NAN});
  ReduceSpec spec;
  spec.axes = {1};
  absl::StatusOr<ScaleLayout> l = MakeScaleLayout(x.shape(), spec);
  ASSERT_TRUE(l.ok());
  const Calibration p = Calibrate(x, *l, *ParseCalibrationMethod("percentile,100"), QType::kInt8);
  EXPECT_EQ(p.absmax.data<float>()[0], 2.0f);
  const Calibration m = Calibrate(x, *l, *ParseCalibrationMethod("mse,4"), QType::kInt8);
  EXPECT_TRUE(std::isfinite(m.absmax.data<float>()[0]));
  EXPECT_GT(m.absmax.data<float>()[0], 0.0f);
  EXPECT_LE(m.absmax.data<float>()[0], 2.0f);
}

TEST(CalibrationExtTest, EntropyHistogramDoublesItsRangeAndKeepsCounts) {
  EntropyHistogram h;
  h.bins = 8;
  EntropyAdd(h, Tensor::FromFloats({2}, {0.0f, 0.0f}));  // zeros first: nothing placed
  EXPECT_EQ(h.range, 0.0f);
  EXPECT_TRUE(h.hist.empty());
  EXPECT_EQ(EntropyThreshold(h, QType::kInt4), 0.0f);
  EntropyAdd(h, Tensor::FromFloats({4}, {1.0f, -0.5f, 0.1f, 0.0f}));
  EXPECT_EQ(h.range, 1.0f);
  EXPECT_EQ(h.hist, (std::vector<double>{2, 0, 0, 0, 1, 0, 0, 1}));  // |x| = R lands in the last
  EntropyAdd(h, Tensor::FromFloats({1}, {-3.0f}));  // 1 -> 2 -> 4: two doublings, 4 bins per bin
  EXPECT_EQ(h.range, 4.0f);
  EXPECT_EQ(h.hist, (std::vector<double>{2, 2, 0, 0, 0, 0, 1, 0}));
  // 8 bins are fewer than int8's 128 levels: no candidate, A = R.
  EXPECT_EQ(EntropyThreshold(h, QType::kInt8), 4.0f);
  // Non-finite values are skipped; a huge jump merges everything into the first bin.
  EntropyAdd(h, Tensor::FromFloats({3}, {NAN, INFINITY, 1e30f}));
  EXPECT_GE(h.range, 1e30f);
  EXPECT_EQ(h.hist[0], 5.0);  // the five earlier values
  double total = 0;
  for (double c : h.hist) total += c;
  EXPECT_EQ(total, 6.0);  // and 1e30, but neither NaN nor inf
}

TEST(CalibrationExtTest, EntropySrqFallsBackToAbsmaxUntilCounted) {
  SrqStat s = MakeEntropySrqStat(2, 64);
  const Tensor x = Tensor::FromFloats({1, 3}, {0.5f, -2.0f, 1.0f});
  Calibration c = SrqObserveEntropy(s, x, QType::kInt4, /*update=*/false);
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(c.absmax.shape(), (Shape{1, 1}));
  EXPECT_EQ(c.absmax.data<float>()[0], 2.0f);
  EXPECT_EQ(SrqCalibration(s, QType::kInt4).status().code(), absl::StatusCode::kFailedPrecondition);
  c = SrqObserveEntropy(s, x, QType::kInt4, /*update=*/true);
  EXPECT_EQ(s.count, 1);
  const float threshold = c.absmax.data<float>()[0];
  EXPECT_GT(threshold, 0.0f);
  EXPECT_LE(threshold, 2.0f);
  EXPECT_EQ(SrqCalibration(s, QType::kInt4)->absmax.data<float>()[0], threshold);
}

}  // namespace
}  // namespace qtrain
