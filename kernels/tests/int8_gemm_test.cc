// The exact int8 GEMM, every variant this CPU can run (whatever QTRAIN_MAX_ISA says), against
// the reference backend bit for bit: full-range operands (the values that saturate oneDNN's
// non-VNNI kernels), ragged shapes, odd K, transposed B, u8 sources, accumulation, int32 output.
#include "kernels/int8_gemm.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/backend/backend.h"

namespace qtrain {
namespace {

using int8gemm::Kernel;

// Every variant some level of this CPU runs (levels are feature sets: AVX-VNNI is not implied by
// AVX-512 VNNI, so each level is asked).
std::vector<Kernel> RunnableKernels() {
  std::vector<Kernel> out;
  for (Kernel k : {Kernel::kAvx2, Kernel::kAvx2Vnni, Kernel::kAvx512, Kernel::kAvx512Vnni}) {
    for (Isa isa : RunnableIsas()) {
      if (int8gemm::Runs(k, isa)) {
        out.push_back(k);
        break;
      }
    }
  }
  return out;
}

struct Case {
  int64_t m, k, n;
  bool trans_b, a_unsigned, accumulate;
};

template <typename T>
std::vector<T> Random(int64_t n, int lo, int hi, std::mt19937& gen) {
  std::uniform_int_distribution<int> dist(lo, hi);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(dist(gen));
  return v;
}

TEST(Int8Gemm, AvxVnniIsOnlyRunAtTheLevelThatRequiresIt) {
  EXPECT_TRUE(int8gemm::Runs(Kernel::kAvx2Vnni, Isa::kAvx2Vnni));
  EXPECT_FALSE(int8gemm::Runs(Kernel::kAvx2Vnni, Isa::kAvx512Vnni));  // e.g. Cascade Lake
  EXPECT_FALSE(int8gemm::Runs(Kernel::kAvx512, Isa::kAvx2Vnni));
  EXPECT_TRUE(int8gemm::Runs(Kernel::kAvx2, Isa::kAvx512));
}

TEST(Int8Gemm, EveryX8664V3CpuRunsAVariant) {
  // From x86-64-v3 on, exact_avx2 at least; below it none (the reference loops run int8).
  EXPECT_EQ(RunnableKernels().empty(), DetectedIsa() < Isa::kAvx2) << CpuSummary();
}

TEST(Int8Gemm, EqualsTheReferenceBitForBit) {
  const std::vector<Case> cases = {
      {1, 1, 1, false, false, false},     {1, 2, 1, true, false, false},
      {3, 5, 7, false, true, false},      {17, 31, 19, true, false, true},
      {64, 128, 48, false, false, false}, {65, 257, 97, true, true, false},
      {9, 1024, 50, false, false, true},  {130, 64, 200, false, true, true},
      {256, 300, 130, true, false, false}};
  auto ref = MakeReferenceBackend();
  std::mt19937 gen(7);
  for (Kernel kernel : RunnableKernels()) {
    for (const Case& c : cases) {
      // Extremes on purpose: -128·-128 pairs overflow int16 pair sums (vpmaddubsw saturates).
      const auto a_s8 = Random<int8_t>(c.m * c.k, -128, 127, gen);
      const auto a_u8 = Random<uint8_t>(c.m * c.k, 0, 255, gen);
      const auto b = Random<int8_t>(c.k * c.n, -128, 127, gen);
      std::vector<float> rs(c.m), cs(c.n);
      for (float& v : rs) v = std::uniform_real_distribution<float>(0.001f, 0.1f)(gen);
      for (float& v : cs) v = std::uniform_real_distribution<float>(0.001f, 0.1f)(gen);
      const void* a = c.a_unsigned ? static_cast<const void*>(a_u8.data()) : a_s8.data();
      std::vector<float> want(c.m * c.n, 0.5f), got(c.m * c.n, 0.5f);
      Int8MatmulDesc d;
      d.mm = MatmulDesc{c.m, c.k, c.n};
      d.mm.trans_b = c.trans_b;
      d.mm.accumulate = c.accumulate;
      d.a_unsigned = c.a_unsigned;
      ASSERT_TRUE(ref->MatmulInt8(d, a, b.data(), rs.data(), cs.data(), want.data()).ok());
      int8gemm::Args g;
      g.m = c.m;
      g.n = c.n;
      g.k = c.k;
      g.a = a;
      g.lda = c.k;
      g.a_unsigned = c.a_unsigned;
      g.b = b.data();
      g.ldb = c.trans_b ? c.k : c.n;
      g.trans_b = c.trans_b;
      g.row_scale = rs.data();
      g.col_scale = cs.data();
      g.c_f32 = got.data();
      g.ldc = c.n;
      g.accumulate = c.accumulate;
      int8gemm::Gemm(kernel, g);
      for (int64_t i = 0; i < c.m * c.n; ++i) {
        ASSERT_EQ(got[i], want[i]) << int8gemm::KernelName(kernel) << " M=" << c.m << " K=" << c.k
                                   << " N=" << c.n << " at " << i;
      }
      // int32 output without scales (the convolution path).
      std::vector<int32_t> acc(c.m * c.n, 3);
      g.c_f32 = nullptr;
      g.c_s32 = acc.data();
      g.row_scale = g.col_scale = nullptr;
      int8gemm::Gemm(kernel, g);
      std::vector<float> unscaled(c.m * c.n, 3.0f);
      ASSERT_TRUE(ref->MatmulInt8(d, a, b.data(), nullptr, nullptr, unscaled.data()).ok());
      for (int64_t i = 0; i < c.m * c.n; ++i) {
        ASSERT_EQ(static_cast<float>(acc[i]), unscaled[i])
            << int8gemm::KernelName(kernel) << " int32 M=" << c.m << " K=" << c.k << " N=" << c.n
            << " at " << i;
      }
    }
  }
}

TEST(Int8Gemm, WorstCaseSumsStayExact) {
  // Every product at its largest magnitude: -128·-128 (s8) and 255·-128 (u8) over K = 4096.
  const int64_t m = 8, k = 4096, n = 64;
  std::vector<int8_t> a_s8(m * k, -128), b(k * n, -128);
  std::vector<uint8_t> a_u8(m * k, 255);
  for (Kernel kernel : RunnableKernels()) {
    for (bool u8 : {false, true}) {
      std::vector<int32_t> c(m * n);
      int8gemm::Args g;
      g.m = m;
      g.n = n;
      g.k = k;
      g.a = u8 ? static_cast<const void*>(a_u8.data()) : a_s8.data();
      g.lda = k;
      g.a_unsigned = u8;
      g.b = b.data();
      g.ldb = n;
      g.c_s32 = c.data();
      g.ldc = n;
      int8gemm::Gemm(kernel, g);
      const int32_t want = static_cast<int32_t>(k) * (u8 ? 255 * -128 : 128 * 128);
      for (int32_t v : c) ASSERT_EQ(v, want) << int8gemm::KernelName(kernel) << " u8=" << u8;
    }
  }
}

}  // namespace
}  // namespace qtrain
