#include "kernels/tests/test_util.h"

#include <cmath>

#include <gtest/gtest.h>

namespace qtrain::testing {

Tensor RandomTensor(const Shape& shape, uint32_t seed, float stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  Tensor t = Tensor::Empty(DType::kF32, shape);
  for (float& v : t.span<float>()) {
    v = dist(gen);
  }
  return t;
}

double MaxRelativeToPeak(const Tensor& a, const Tensor& b) {
  double peak = 1e-30, err = 0;
  for (int64_t i = 0; i < b.numel(); ++i) {
    peak = std::max(peak, std::fabs(static_cast<double>(b.data<float>()[i])));
    err = std::max(err, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
  }
  return err / peak;
}

double MeanRelativeDifference(const Tensor& a, const Tensor& b) {
  double num = 0, den = 1e-30;
  for (int64_t i = 0; i < b.numel(); ++i) {
    num += std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]);
    den += std::fabs(static_cast<double>(b.data<float>()[i]));
  }
  return num / den;
}

std::unique_ptr<Backend> Onednn() {
  auto b = MakeOnednnBackend();
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

}  // namespace qtrain::testing
