#include "kernels/tests/test_util.h"

#include <cmath>

#include "kernels/backend/guarded_backend.h"
#include "kernels/cpu_isa.h"

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

void* Mirror::Device(Tensor& host) {
  if (backend_.device().is_host()) return host.raw();
  for (auto& [h, d] : copies_) {
    if (h == &host) return d.raw();
  }
  absl::StatusOr<Tensor> d = backend_.Allocate(host.dtype(), host.shape());
  EXPECT_TRUE(d.ok()) << d.status();
  if (!d.ok()) return nullptr;
  const absl::Status s = backend_.CopyFromHost(host, *d);
  EXPECT_TRUE(s.ok()) << s;
  copies_.emplace_back(&host, *std::move(d));
  return copies_.back().second.raw();
}

void Mirror::Back() {
  for (auto& [h, d] : copies_) {
    const absl::Status s = backend_.CopyToHost(d, *h);
    EXPECT_TRUE(s.ok()) << s;
  }
}

Tensor Upload(Backend& backend, const Tensor& t) {
  absl::StatusOr<Tensor> d = backend.ToDevice(t);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() ? *std::move(d) : Tensor();
}

Tensor Download(Backend& backend, const Tensor& t) {
  absl::StatusOr<Tensor> h = backend.HostCopy(t);
  EXPECT_TRUE(h.ok()) << h.status();
  return h.ok() ? *std::move(h) : Tensor();
}

std::vector<std::unique_ptr<Backend>> ConformanceBackends() {
  std::vector<std::unique_ptr<Backend>> out;
  out.push_back(Onednn());
  out.push_back(MakeGuardedBackend());
  return out;
}

std::string ExpectedInt8Kernel() {
  switch (ActiveIsa()) {
    case Isa::kBaseline:
      return "reference";
    case Isa::kAvx2:
      return "exact_avx2";
    case Isa::kAvx2Vnni:
      return "exact_avx2_vnni";
    case Isa::kAvx512:
      return "exact_avx512";
    case Isa::kAvx512Vnni:
      return "onednn:brg:avx512_core_vnni";
    case Isa::kAmx:
      return "onednn:brg:avx512_core_amx";  // or _vnni for some shapes: callers accept both
  }
  return "?";
}

}  // namespace qtrain::testing
