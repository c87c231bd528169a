// The row loops compiled per ISA (kernels/row_ops/) give the same bits in every variant this CPU
// runs: no FMA contraction, width-independent reduction order, NaN and infinities alike.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu_isa.h"
#include "kernels/row_ops/table.h"

namespace qtrain {
namespace {

using rowops::internal::Table;

struct Variant {
  const char* name;
  const Table* table;
};

std::vector<Variant> Variants() {
  std::vector<Variant> out = {{"baseline", &rowops::internal::BaselineTable()}};
  if (DetectedIsa() >= Isa::kAvx2) out.push_back({"avx2", &rowops::internal::Avx2Table()});
  if (DetectedIsa() >= Isa::kAvx512) out.push_back({"avx512", &rowops::internal::Avx512Table()});
  return out;
}

std::vector<float> Data(int64_t n, uint32_t seed, bool specials) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  if (specials && n > 4) {
    v[1] = std::numeric_limits<float>::quiet_NaN();
    v[2] = std::numeric_limits<float>::infinity();
    v[3] = -std::numeric_limits<float>::infinity();
    v[4] = 1e-30f;
  }
  return v;
}

template <typename T>
bool SameBits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

const int64_t kSizes[] = {1, 7, 37, 1000, 70001};  // 70001: the threaded update path too

TEST(RowOps, ReductionsAreTheSameBitsInEveryVariant) {
  const auto variants = Variants();
  // Below AVX2 only the baseline variant exists, and the comparisons below are trivially true.
  EXPECT_EQ(variants.size() >= 2, DetectedIsa() >= Isa::kAvx2) << CpuSummary();
  for (int64_t n : kSizes) {
    const std::vector<float> x = Data(n, 1, false);
    const Table& base = *variants[0].table;
    float lo0, hi0;
    base.min_max0(x.data(), n, &lo0, &hi0);
    std::vector<double> sq0(n, 0.5);
    base.sum_squares_into(x.data(), n, sq0.data());
    for (const Variant& v : variants) {
      EXPECT_EQ(v.table->abs_max(x.data(), n), base.abs_max(x.data(), n)) << v.name << " " << n;
      const double s = v.table->sum_squares(x.data(), n), s0 = base.sum_squares(x.data(), n);
      EXPECT_EQ(std::memcmp(&s, &s0, sizeof s), 0)
          << v.name << " n=" << n << ": " << s << " vs " << s0;
      float lo, hi;
      v.table->min_max0(x.data(), n, &lo, &hi);
      EXPECT_EQ(lo, lo0);
      EXPECT_EQ(hi, hi0);
      std::vector<double> sq(n, 0.5);
      v.table->sum_squares_into(x.data(), n, sq.data());
      EXPECT_TRUE(SameBits(sq, sq0)) << v.name << " " << n;
    }
  }
}

TEST(RowOps, QuantizeIsTheSameBitsInEveryVariantNanAndInfinitiesIncluded) {
  const auto variants = Variants();
  for (int64_t n : kSizes) {
    const std::vector<float> x = Data(n, 2, true);
    std::vector<float> scales(n), zps(n), noise(n);
    std::mt19937 gen(3);
    for (int64_t i = 0; i < n; ++i) {
      scales[i] = std::uniform_real_distribution<float>(0.01f, 0.1f)(gen);
      zps[i] = static_cast<float>(static_cast<int>(gen() % 21) - 10);
      noise[i] = std::uniform_real_distribution<float>(-0.5f, 0.5f)(gen);
    }
    const float one_scale = 0.037f;
    for (int mode = 0; mode < 4; ++mode) {  // one scale, per-element, zero points, noise
      rowops::QuantRowArgs a{x.data(),
                             n,
                             mode == 0 ? &one_scale : scales.data(),
                             mode == 0 ? 0 : 1,
                             mode >= 2 ? zps.data() : nullptr,
                             mode == 3 ? noise.data() : nullptr,
                             1,
                             -128.0f,
                             127.0f};
      std::vector<int8_t> s8_0(n);
      std::vector<float> f32_0(n);
      variants[0].table->quantize_row_s8(a, s8_0.data());
      variants[0].table->quantize_row_f32(a, f32_0.data());
      if (n > 4) EXPECT_EQ(s8_0[1], -128) << "NaN quantizes to qmin";
      for (const Variant& v : variants) {
        std::vector<int8_t> s8(n);
        std::vector<float> f32(n);
        v.table->quantize_row_s8(a, s8.data());
        v.table->quantize_row_f32(a, f32.data());
        EXPECT_TRUE(SameBits(s8, s8_0)) << v.name << " n=" << n << " mode=" << mode;
        EXPECT_TRUE(SameBits(f32, f32_0)) << v.name << " n=" << n << " mode=" << mode;
        for (int64_t i = 0; i < n; ++i) {
          ASSERT_EQ(static_cast<float>(s8[i]), f32[i]) << v.name << " at " << i;
        }
      }
      a.qmin = 0.0f;
      a.qmax = 255.0f;
      std::vector<uint8_t> u8_0(n);
      variants[0].table->quantize_row_u8(a, u8_0.data());
      for (const Variant& v : variants) {
        std::vector<uint8_t> u8(n);
        v.table->quantize_row_u8(a, u8.data());
        EXPECT_TRUE(SameBits(u8, u8_0)) << v.name << " u8 n=" << n << " mode=" << mode;
      }
    }
  }
}

float MaxAbs(const std::vector<float>& x) {
  float m = 0;
  for (float v : x) m = std::max(m, std::fabs(v));
  return m;
}

TEST(RowOps, OptimizerUpdatesAreTheSameBitsInEveryVariant) {
  const auto variants = Variants();
  for (int64_t n : kSizes) {
    const std::vector<float> w0 = Data(n, 4, false), g = Data(n, 5, false);
    std::vector<float> m0 = Data(n, 6, false), v0 = Data(n, 7, false);
    for (float& x : v0) x = x * x;
    std::vector<float> want_w, want_m, want_v;
    for (const Variant& var : variants) {
      std::vector<float> w = w0, m = m0, v = v0;
      for (int step = 0; step < 3; ++step) {
        const rowops::AdamWArgs adamw{w.data(),
                                      m.data(),
                                      v.data(),
                                      g.data(),
                                      n,
                                      0.7f,
                                      1e-3f,
                                      0.01f,
                                      0.9f,
                                      0.999f,
                                      1e-8f,
                                      1.0f - std::pow(0.9f, step + 1.0f),
                                      1.0f - std::pow(0.999f, step + 1.0f)};
        const rowops::SgdArgs momentum{w.data(), m.data(), g.data(), n,   1.0f,
                                       0.01f,    1e-4f,    0.9f,     true};
        const rowops::SgdArgs plain{w.data(), nullptr, g.data(), n,    1.0f,
                                    0.01f,    1e-4f,   0.0f,     false};
        ASSERT_TRUE(var.table->adamw_update_is_finite(adamw));
        const rowops::UpdateMax am = var.table->adamw_update(adamw);
        EXPECT_EQ(am.w, MaxAbs(w)) << var.name;
        EXPECT_EQ(am.m, MaxAbs(m)) << var.name;
        EXPECT_EQ(am.v, MaxAbs(v)) << var.name;
        ASSERT_TRUE(var.table->sgd_update_is_finite(momentum));
        const rowops::UpdateMax sm = var.table->sgd_update(momentum);
        EXPECT_EQ(sm.w, MaxAbs(w)) << var.name;
        EXPECT_EQ(sm.m, MaxAbs(m)) << var.name;
        ASSERT_TRUE(var.table->sgd_update_is_finite(plain));
        const rowops::UpdateMax pm = var.table->sgd_update(plain);
        EXPECT_EQ(pm.w, MaxAbs(w)) << var.name;
      }
      // The dry runs see what the updates would do, and write nothing.
      const std::vector<float> before = w;
      const float inf = std::numeric_limits<float>::infinity();
      rowops::AdamWArgs huge{w.data(), m.data(), v.data(), g.data(), n,    1.0f,  inf,
                             0.0f,     0.9f,     0.999f,   1e-8f,    0.1f, 0.001f};
      EXPECT_EQ(var.table->adamw_update_is_finite(huge), n == 0) << var.name;
      EXPECT_EQ(var.table->sgd_update_is_finite(
                    {w.data(), nullptr, g.data(), n, 1.0f, inf, 0.0f, 0.0f, false}),
                n == 0)
          << var.name;
      EXPECT_TRUE(SameBits(w, before)) << var.name;
      if (want_w.empty()) {
        want_w = w, want_m = m, want_v = v;
        continue;
      }
      EXPECT_TRUE(SameBits(w, want_w)) << var.name << " n=" << n;
      EXPECT_TRUE(SameBits(m, want_m)) << var.name << " n=" << n;
      EXPECT_TRUE(SameBits(v, want_v)) << var.name << " n=" << n;
    }
  }
}

}  // namespace
}  // namespace qtrain
