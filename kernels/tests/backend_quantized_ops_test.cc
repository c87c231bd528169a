// Conformance rows of the quantized ops (Backend::QuantizedDot*, QuantizedConv*, CalibrateOperand):
// every backend against the reference's plain loops, with tensors on the backend's own device
// (the guarded backend's are uploaded and read back through its copies).
#include <gtest/gtest.h>

#include "kernels/calibration.h"
#include "kernels/qconv.h"
#include "kernels/qdot.h"
#include "kernels/tests/test_util.h"

namespace qtrain {
namespace {

using testing::Download;
using testing::MaxRelativeToPeak;
using testing::RandomTensor;
using testing::Upload;

std::vector<std::unique_ptr<Backend>> Backends() { return testing::ConformanceBackends(); }

QDotConfig Int8(bool qt, const char* method) {
  QDotConfig c;
  c.lhs.qtype = QType::kInt8;
  c.rhs.qtype = QType::kInt8;
  c.lhs.method = *ParseCalibrationMethod(method);
  c.rhs.method = *ParseCalibrationMethod("absmax");
  if (qt) c.bwd_qtype = QType::kInt8;
  return c;
}

// QAT (clipping and not) and QT (integer backward) dots, plain and batched.
TEST(BackendConformance, QuantizedDot) {
  auto ref = MakeReferenceBackend();
  struct Case {
    Shape x, w;
    bool qt;
    const char* method;
  };
  for (const Case& c :
       {Case{{24, 64}, {64, 40}, false, "absmax"}, Case{{24, 64}, {64, 40}, false, "absmax,0.7"},
        Case{{24, 64}, {64, 40}, true, "absmax"}, Case{{3, 8, 32}, {3, 32, 8}, false, "absmax"}}) {
    const Tensor x = RandomTensor(c.x, 1), w = RandomTensor(c.w, 2, 0.1f);
    const QDotConfig config = Int8(c.qt, c.method);
    absl::StatusOr<QDotForwardResult> want = ref->QuantizedDotForward(x, w, config);
    ASSERT_TRUE(want.ok()) << want.status();
    const Tensor g = RandomTensor(want->y.shape(), 3, 0.01f);
    const CounterRng rng(5, 0);
    absl::StatusOr<QDotGradients> want_g =
        ref->QuantizedDotBackward(x, w, g, want->residuals, config, &rng, 0);
    ASSERT_TRUE(want_g.ok()) << want_g.status();
    for (auto& b : Backends()) {
      SCOPED_TRACE(absl::StrCat(b->name(), " ", ShapeString(c.x), " qt=", c.qt, " ", c.method));
      const Tensor bx = Upload(*b, x), bw = Upload(*b, w), bg = Upload(*b, g);
      absl::StatusOr<QDotForwardResult> got = b->QuantizedDotForward(bx, bw, config);
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->y.device(), b->device());
      EXPECT_LT(MaxRelativeToPeak(Download(*b, got->y), want->y), 2e-6);
      absl::StatusOr<QDotGradients> got_g =
          b->QuantizedDotBackward(bx, bw, bg, got->residuals, config, &rng, 0);
      ASSERT_TRUE(got_g.ok()) << got_g.status();
      EXPECT_LT(MaxRelativeToPeak(Download(*b, got_g->dx), want_g->dx), 2e-6);
      EXPECT_LT(MaxRelativeToPeak(Download(*b, got_g->dw), want_g->dw), 2e-6);
    }
  }
}

// A static (SRQ) lhs calibration on the backend's device, and the operand's calibration itself.
TEST(BackendConformance, QuantizedDotStaticAndCalibration) {
  auto ref = MakeReferenceBackend();
  const Tensor x = RandomTensor({16, 32}, 7), w = RandomTensor({32, 8}, 8, 0.1f);
  absl::StatusOr<ScaleLayout> layout = MakeScaleLayout(x.shape(), ReduceSpec{{1}});
  ASSERT_TRUE(layout.ok());
  for (const char* method : {"absmax", "minmax", "rms,3", "percentile,99", "mse,8"}) {
    const CalibrationMethod m = *ParseCalibrationMethod(method);
    absl::StatusOr<Calibration> want = ref->CalibrateOperand(x, *layout, m, QType::kInt8);
    ASSERT_TRUE(want.ok()) << want.status();
    for (auto& b : Backends()) {
      SCOPED_TRACE(absl::StrCat(b->name(), " ", method));
      absl::StatusOr<Calibration> got =
          b->CalibrateOperand(Upload(*b, x), *layout, m, QType::kInt8);
      ASSERT_TRUE(got.ok()) << got.status();
      const Tensor& g = got->symmetric ? got->absmax : got->hi;
      const Tensor& r = want->symmetric ? want->absmax : want->hi;
      EXPECT_EQ(MaxRelativeToPeak(Download(*b, g), r), 0.0);  // the same loops: the same bits
    }
  }
  Calibration fixed;
  fixed.absmax = Tensor::FromFloats({1, 1}, {{2.0f}});
  QDotConfig config = Int8(false, "absmax");
  config.lhs.static_calibration = &fixed;
  absl::StatusOr<QDotForwardResult> want = ref->QuantizedDotForward(x, w, config);
  ASSERT_TRUE(want.ok()) << want.status();
  for (auto& b : Backends()) {
    SCOPED_TRACE(b->name());
    Calibration on;
    on.absmax = Upload(*b, fixed.absmax);
    QDotConfig bc = config;
    bc.lhs.static_calibration = &on;
    absl::StatusOr<QDotForwardResult> got =
        b->QuantizedDotForward(Upload(*b, x), Upload(*b, w), bc);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_LT(MaxRelativeToPeak(Download(*b, got->y), want->y), 2e-6);
  }
}

TEST(BackendConformance, QuantizedConv) {
  auto ref = MakeReferenceBackend();
  const Tensor x = RandomTensor({2, 6, 6, 4}, 11), w = RandomTensor({3, 3, 4, 5}, 12, 0.1f);
  QConvConfig config;
  config.lhs.qtype = QType::kInt8;
  config.rhs.qtype = QType::kInt8;
  config.pad_top = config.pad_left = config.pad_bottom = config.pad_right = 1;
  absl::StatusOr<QConvForwardResult> want = ref->QuantizedConvForward(x, w, config);
  ASSERT_TRUE(want.ok()) << want.status();
  const Tensor g = RandomTensor(want->y.shape(), 13, 0.01f);
  absl::StatusOr<QDotGradients> want_g = ref->QuantizedConvBackward(g, want->residuals, config);
  ASSERT_TRUE(want_g.ok()) << want_g.status();
  for (auto& b : Backends()) {
    SCOPED_TRACE(b->name());
    absl::StatusOr<QConvForwardResult> got =
        b->QuantizedConvForward(Upload(*b, x), Upload(*b, w), config);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_LT(MaxRelativeToPeak(Download(*b, got->y), want->y), 2e-6);
    absl::StatusOr<QDotGradients> got_g =
        b->QuantizedConvBackward(Upload(*b, g), got->residuals, config);
    ASSERT_TRUE(got_g.ok()) << got_g.status();
    EXPECT_LT(MaxRelativeToPeak(Download(*b, got_g->dx), want_g->dx), 2e-6);
    EXPECT_LT(MaxRelativeToPeak(Download(*b, got_g->dw), want_g->dw), 2e-6);
  }
}

}  // namespace
}  // namespace qtrain
