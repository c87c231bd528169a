// One conformance suite for every backend: each op of the oneDNN backend against the reference
// backend on random, awkward shapes (M=1, K=1, sizes off multiples of 16, strides, transposes).
// Every backend of testing::ConformanceBackends() (oneDNN, the guarded test backend; a future GPU
// backend adds itself there) runs each row on its own device through testing::Mirror.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "kernels/backend/backend.h"
#include "kernels/backend/float_gemm.h"
#include "kernels/tests/test_util.h"

namespace qtrain {
namespace {

using testing::MaxRelativeToPeak;
using testing::Mirror;
using testing::OnDevice;
using testing::RandomTensor;

struct MatmulCase {
  int64_t m, k, n;
  bool trans_a, trans_b, accumulate;
};

std::vector<MatmulCase> MatmulCases() {
  std::vector<MatmulCase> cases;
  for (auto [m, k, n] : std::vector<std::array<int64_t, 3>>{
           {1, 1, 1}, {1, 17, 5}, {33, 1, 7}, {17, 31, 19}, {64, 128, 48}, {5, 300, 2}}) {
    for (int flags = 0; flags < 8; ++flags) {
      cases.push_back({m, k, n, (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0});
    }
  }
  return cases;
}

std::vector<std::unique_ptr<Backend>> Backends() { return testing::ConformanceBackends(); }

Tensor RandomInts(const Shape& shape, int lo, int hi, uint32_t seed, DType dtype) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> dist(lo, hi);
  Tensor t = Tensor::Empty(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if (dtype == DType::kS8) {
      t.data<int8_t>()[i] = static_cast<int8_t>(dist(gen));
    } else {
      t.data<uint8_t>()[i] = static_cast<uint8_t>(dist(gen));
    }
  }
  return t;
}

// Memory through the backend: allocation on its device, host round trips byte for byte, and the
// copies' refusals (shape, dtype, a tensor on another device) naming what they got.
TEST(BackendConformance, MemoryRoundTrips) {
  std::vector<std::unique_ptr<Backend>> all = Backends();
  all.push_back(MakeReferenceBackend());
  for (auto& backend : all) {
    SCOPED_TRACE(backend->name());
    for (const Shape& shape : std::vector<Shape>{{}, {0}, {1}, {3, 17}, {2, 3, 5, 7}}) {
      const Tensor host = RandomTensor(shape, 11);
      absl::StatusOr<Tensor> on = backend->Allocate(DType::kF32, shape);
      ASSERT_TRUE(on.ok()) << on.status();
      EXPECT_EQ(on->device(), backend->device());
      EXPECT_EQ(on->shape(), shape);
      ASSERT_TRUE(backend->CopyFromHost(host, *on).ok());
      Tensor back = Tensor::Empty(DType::kF32, shape);
      ASSERT_TRUE(backend->CopyToHost(*on, back).ok());
      ASSERT_TRUE(backend->Synchronize().ok());
      EXPECT_EQ(0, std::memcmp(host.raw(), back.raw(), host.nbytes()));
    }
    absl::StatusOr<Tensor> on = backend->Allocate(DType::kF32, {4});
    ASSERT_TRUE(on.ok());
    absl::Status s = backend->CopyFromHost(Tensor::Zeros(DType::kF32, {5}), *on);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("f32[5] and dst f32[4] differ"), std::string::npos) << s;
    Tensor ints = Tensor::Zeros(DType::kS32, {4});
    EXPECT_EQ(backend->CopyToHost(*on, ints).code(), absl::StatusCode::kInvalidArgument);
    // A tensor of another device (here a stand-in over host bytes) is refused by name.
    Tensor elsewhere = Tensor::OnDevice(
        DType::kF32, {4}, Device{DeviceKind::kCuda, 1},
        std::shared_ptr<std::byte>(new std::byte[16], std::default_delete<std::byte[]>()));
    s = backend->CopyFromHost(elsewhere, *on);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("src is on cuda:1"), std::string::npos) << s;
  }
}

TEST(BackendConformanceDeathTest, DeviceTensorsHaveNoHostElementAccess) {
  Tensor t = Tensor::OnDevice(
      DType::kF32, {4}, Device{DeviceKind::kCuda, 0},
      std::shared_ptr<std::byte>(new std::byte[16], std::default_delete<std::byte[]>()));
  EXPECT_EQ(t.device().Name(), "cuda:0");
  EXPECT_DEATH(t.data<float>(), "");
  EXPECT_DEATH(Tensor copy(t), "");
}

// Every f32 matmul candidate (float_gemm.h): oneDNN, OpenBLAS (where it runs within the active
// ISA; else the list falls back and says why) and the measured choice.
TEST(BackendConformance, MatmulF32) {
  auto ref = MakeReferenceBackend();
  for (FloatGemmPolicy policy :
       {FloatGemmPolicy::kOnednn, FloatGemmPolicy::kOpenblas, FloatGemmPolicy::kAuto}) {
    SetFloatGemmPolicy(policy);
    for (auto& backend : Backends()) {
      for (const MatmulCase& c : MatmulCases()) {
        for (int64_t pad : {0, 3}) {  // dense, then leading dims 3 past the rows
          MatmulDesc d{c.m, c.k, c.n};
          d.trans_a = c.trans_a;
          d.trans_b = c.trans_b;
          d.accumulate = c.accumulate;
          const int64_t a_rows = c.trans_a ? c.k : c.m, a_cols = c.trans_a ? c.m : c.k;
          const int64_t b_rows = c.trans_b ? c.n : c.k, b_cols = c.trans_b ? c.k : c.n;
          if (pad > 0) {
            d.lda = a_cols + pad;
            d.ldb = b_cols + pad;
            d.ldc = c.n + pad;
          }
          Tensor a = RandomTensor({a_rows, a_cols + pad}, 1);
          Tensor b = RandomTensor({b_rows, b_cols + pad}, 2);
          Tensor want = RandomTensor({c.m, c.n + pad}, 3);
          Tensor got = want;
          ASSERT_TRUE(ref->MatmulF32(d, a.data<float>(), b.data<float>(), want.data<float>()).ok());
          ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                        return backend->MatmulF32(d, m.P(a), m.P(b), m.P(got));
                      }).ok());
          EXPECT_LT(MaxRelativeToPeak(got, want), 1e-5)
              << backend->name() << " policy=" << FloatGemmPolicyName(policy) << " M=" << c.m
              << " K=" << c.k << " N=" << c.n << " ta=" << c.trans_a << " tb=" << c.trans_b
              << " acc=" << c.accumulate << " pad=" << pad;
        }
      }
    }
  }
  SetFloatGemmPolicy(FloatGemmPolicy::kAuto);
}

// The candidate list reports each choice with its reasons, and a pinned policy holds.
TEST(BackendConformance, FloatGemmChoicesAreReported) {
  const MatmulDesc d{40, 50, 60};
  const bool blas = OpenblasUnsupported(d).empty();
  std::vector<float> a(40 * 50, 1.0f), b(50 * 60, 1.0f), c(40 * 60);
  for (FloatGemmPolicy policy :
       {FloatGemmPolicy::kOnednn, FloatGemmPolicy::kOpenblas, FloatGemmPolicy::kAuto}) {
    SetFloatGemmPolicy(policy);
    EXPECT_TRUE(FloatGemmChoices().empty());  // a new policy forgets the old choices
    ASSERT_TRUE(testing::Onednn()->MatmulF32(d, a.data(), b.data(), c.data()).ok());
    EXPECT_EQ(c[0], 50.0f);
    const std::vector<ImplReport> reports = FloatGemmChoices();
    ASSERT_EQ(reports.size(), 1u);
    const ImplReport& r = reports[0];
    EXPECT_EQ(r.op.rfind("matmul f32 40x50x60, ", 0), 0u) << r.op;
    ASSERT_EQ(r.candidates.size(), 2u);
    EXPECT_EQ(r.candidates[0].name.rfind("onednn:", 0), 0u);
    EXPECT_EQ(r.candidates[1].name.rfind("openblas:", 0), 0u);
    EXPECT_EQ(r.candidates[1].supported, blas) << r.candidates[1].reason;
    EXPECT_FALSE(r.candidates[1].reason.empty());
    const bool pinned_blas = policy == FloatGemmPolicy::kOpenblas && blas;
    if (policy != FloatGemmPolicy::kAuto) {
      EXPECT_EQ(r.chosen, r.candidates[pinned_blas ? 1 : 0].name);
    } else if (blas) {
      EXPECT_NE(r.candidates[1].reason.find("measured"), std::string::npos);
    }
  }
  EXPECT_FALSE(ParseFloatGemmPolicy("mkl").ok());
  EXPECT_NE(ParseFloatGemmPolicy("mkl").status().message().find("\"mkl\" is not one of auto"),
            std::string::npos);
  SetFloatGemmPolicy(FloatGemmPolicy::kAuto);
}

// Issue 10: a primitive per batch size, never freed. A client cycling through sizes now leaves
// at most a bounded cache, and a trimmed-away shape still computes right when it comes back.
TEST(BackendConformance, PrimitiveCacheStaysBoundedAcrossShapes) {
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeOnednnBackend();
  ASSERT_TRUE(b.ok()) << b.status();
  auto ref = MakeReferenceBackend();
  size_t most = 0;
  for (int64_t m = 1; m <= 1500; ++m) {
    MatmulDesc d{m, 4, 3};
    Tensor a = RandomTensor({m, 4}, 1), w = RandomTensor({4, 3}, 2);
    Tensor got = Tensor::Zeros(DType::kF32, {m, 3});
    ASSERT_TRUE((*b)->MatmulF32(d, a.data<float>(), w.data<float>(), got.data<float>()).ok());
    (*b)->TrimCache();
    most = std::max(most, (*b)->CacheEntries());
    if (m % 500 == 1) {  // m = 1 was trimmed long ago: recreated, still right
      Tensor first = RandomTensor({1, 4}, 1), want = Tensor::Zeros(DType::kF32, {1, 3});
      Tensor again = want;
      MatmulDesc one{1, 4, 3};
      ASSERT_TRUE(
          ref->MatmulF32(one, first.data<float>(), w.data<float>(), want.data<float>()).ok());
      ASSERT_TRUE(
          (*b)->MatmulF32(one, first.data<float>(), w.data<float>(), again.data<float>()).ok());
      EXPECT_LT(MaxRelativeToPeak(again, want), 1e-5);
    }
  }
  EXPECT_GT(most, 100u);
  EXPECT_LE(most, 1100u);  // 2 × 512 plus the entries of one step
}

TEST(BackendConformance, MatmulInt8) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (const MatmulCase& c : MatmulCases()) {
      if (c.trans_a) continue;  // int8 src is never transposed
      for (int variant = 0; variant < 4; ++variant) {
        Int8MatmulDesc d;
        d.mm = MatmulDesc{c.m, c.k, c.n};
        d.mm.accumulate = c.accumulate;
        d.mm.trans_b = c.trans_b;
        d.a_unsigned = (variant & 1) != 0;
        const bool scales = (variant & 2) != 0;
        Tensor a = d.a_unsigned ? RandomInts({c.m, c.k}, 0, 255, 4, DType::kU8)
                                : RandomInts({c.m, c.k}, -128, 127, 4, DType::kS8);
        Tensor b =
            RandomInts(c.trans_b ? Shape{c.n, c.k} : Shape{c.k, c.n}, -128, 127, 5, DType::kS8);
        Tensor rs = RandomTensor({c.m}, 6), cs = RandomTensor({c.n}, 7);
        Tensor want = RandomTensor({c.m, c.n}, 8);
        Tensor got = want;
        const float* r = scales ? rs.data<float>() : nullptr;
        const float* s = scales ? cs.data<float>() : nullptr;
        ASSERT_TRUE(ref->MatmulInt8(d, a.raw(), b.data<int8_t>(), r, s, want.data<float>()).ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->MatmulInt8(d, m.P<void>(a), m.P<int8_t>(b), r, s, m.P(got));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(got, want), 1e-6)
            << backend->name() << " M=" << c.m << " K=" << c.k << " N=" << c.n
            << " tb=" << c.trans_b << " u8=" << d.a_unsigned << " scales=" << scales
            << " acc=" << c.accumulate;
      }
    }
  }
}

TEST(BackendConformance, MatmulRejectsBadDescriptors) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    Tensor dummy_host = Tensor::Zeros(DType::kF32, {4}), q_host = Tensor::Zeros(DType::kS8, {4});
    Mirror md(*backend);
    float* dummy = md.P(dummy_host);
    MatmulDesc empty{0, 2, 2};
    EXPECT_EQ(OnDevice(*backend,
                       [&](Mirror& m) { return backend->MatmulF32(empty, dummy, dummy, dummy); })
                  .code(),
              absl::StatusCode::kInvalidArgument);
    MatmulDesc short_ld{2, 2, 2, 1, 0, 0};
    EXPECT_EQ(OnDevice(*backend,
                       [&](Mirror& m) { return backend->MatmulF32(short_ld, dummy, dummy, dummy); })
                  .code(),
              absl::StatusCode::kInvalidArgument);
    Int8MatmulDesc transposed;
    transposed.mm = MatmulDesc{2, 2, 2};
    transposed.mm.trans_a = true;
    const int8_t* q = md.P<int8_t>(q_host);
    EXPECT_EQ(OnDevice(*backend,
                       [&](Mirror& m) {
                         return backend->MatmulInt8(transposed, q, q, nullptr, nullptr, dummy);
                       })
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
}

std::vector<ConvDesc> ConvCases() {
  return {
      ConvDesc{2, 8, 8, 3, 4, 3, 3, 1, 1, 1, 1, 1, 1},   // same padding
      ConvDesc{1, 9, 7, 5, 6, 3, 3, 2, 2, 0, 0, 0, 0},   // valid, stride 2, odd sizes
      ConvDesc{3, 5, 5, 16, 8, 1, 1, 1, 1, 0, 0, 0, 0},  // 1x1
      ConvDesc{1, 6, 6, 1, 1, 5, 5, 1, 1, 2, 1, 2, 1},   // asymmetric padding
      // grouped, depthwise (stride 1 and 2, MobileNet's), a channel multiplier, dilated
      ConvDesc{2, 7, 6, 12, 8, 3, 3, 1, 1, 1, 1, 1, 1, 4},
      ConvDesc{2, 9, 9, 37, 37, 3, 3, 1, 1, 1, 1, 1, 1, 37},
      ConvDesc{3, 8, 7, 24, 24, 3, 3, 2, 2, 1, 1, 1, 1, 24},
      ConvDesc{1, 6, 6, 5, 10, 3, 3, 1, 1, 0, 0, 1, 1, 5},
      ConvDesc{2, 9, 8, 6, 4, 3, 3, 1, 2, 2, 2, 2, 2, 1, 2, 2},
      ConvDesc{1, 10, 10, 8, 8, 3, 2, 2, 1, 3, 1, 2, 0, 8, 3, 2},
      ConvDesc{4, 16, 16, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 64},  // large enough to run threaded
  };
}

TEST(BackendConformance, Convolution) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (const ConvDesc& d : ConvCases()) {
      const Shape src{d.n, d.h, d.w, d.c}, wts{d.kh, d.kw, d.group_c(), d.o};
      const Shape dst{d.n, d.out_h(), d.out_w(), d.o};
      Tensor x = RandomTensor(src, 1), w = RandomTensor(wts, 2), g = RandomTensor(dst, 3);
      Tensor y_ref = Tensor::Empty(DType::kF32, dst), y = y_ref;
      ASSERT_TRUE(ref->ConvFwdF32(d, x.data<float>(), w.data<float>(), y_ref.data<float>()).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->ConvFwdF32(d, m.P(x), m.P(w), m.P(y));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(y, y_ref), 1e-5) << backend->name() << " fwd";

      Tensor dx_ref = Tensor::Empty(DType::kF32, src), dx = dx_ref;
      ASSERT_TRUE(ref->ConvBwdData(d, g.data<float>(), w.data<float>(), dx_ref.data<float>()).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->ConvBwdData(d, m.P(g), m.P(w), m.P(dx));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(dx, dx_ref), 1e-5) << backend->name() << " bwd data";

      Tensor dw_ref = Tensor::Empty(DType::kF32, wts), dw = dw_ref;
      ASSERT_TRUE(
          ref->ConvBwdWeights(d, x.data<float>(), g.data<float>(), dw_ref.data<float>()).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->ConvBwdWeights(d, m.P(x), m.P(g), m.P(dw));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(dw, dw_ref), 1e-5) << backend->name() << " bwd weights";

      Tensor xq = RandomInts(src, -128, 127, 4, DType::kS8);
      Tensor wq = RandomInts(wts, -128, 127, 5, DType::kS8);
      Tensor acc_ref = Tensor::Empty(DType::kS32, dst), acc = acc_ref;
      ASSERT_TRUE(
          ref->ConvFwdInt8(d, xq.data<int8_t>(), wq.data<int8_t>(), acc_ref.data<int32_t>()).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->ConvFwdInt8(d, m.P<int8_t>(xq), m.P<int8_t>(wq),
                                                m.P<int32_t>(acc));
                  }).ok());
      for (int64_t i = 0; i < acc.numel(); ++i) {
        ASSERT_EQ(acc.data<int32_t>()[i], acc_ref.data<int32_t>()[i]) << backend->name() << i;
      }
    }
  }
}

TEST(BackendConformance, ConvolutionRejectsBadDescriptors) {
  for (auto& backend : Backends()) {
    Tensor dummy_host = Tensor::Zeros(DType::kF32, {4}), q_host = Tensor::Zeros(DType::kS8, {4});
    Mirror md(*backend);
    float* dummy = md.P(dummy_host);
    ConvDesc too_big{1, 2, 2, 1, 1, 3, 3, 1, 1, 0, 0, 0, 0};
    EXPECT_EQ(OnDevice(*backend,
                       [&](Mirror& m) { return backend->ConvFwdF32(too_big, dummy, dummy, dummy); })
                  .code(),
              absl::StatusCode::kInvalidArgument);
    ConvDesc zero_stride{1, 2, 2, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0};
    EXPECT_EQ(
        OnDevice(*backend,
                 [&](Mirror& m) { return backend->ConvFwdF32(zero_stride, dummy, dummy, dummy); })
            .code(),
        absl::StatusCode::kInvalidArgument);
    ConvDesc bad_groups{1, 2, 2, 4, 6, 1, 1, 1, 1, 0, 0, 0, 0, 4};  // 6 outputs in 4 groups
    EXPECT_EQ(
        OnDevice(*backend,
                 [&](Mirror& m) { return backend->ConvFwdF32(bad_groups, dummy, dummy, dummy); })
            .code(),
        absl::StatusCode::kInvalidArgument);
    ConvDesc too_dilated{1, 4, 4, 1, 1, 3, 3, 1, 1, 0, 0, 0, 0, 1, 2, 2};  // spans 5x5
    EXPECT_EQ(
        OnDevice(*backend,
                 [&](Mirror& m) { return backend->ConvFwdF32(too_dilated, dummy, dummy, dummy); })
            .code(),
        absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace qtrain

namespace qtrain {
namespace {

using testing::MaxRelativeToPeak;
using testing::Mirror;
using testing::OnDevice;
using testing::RandomTensor;

TEST(BackendConformance, Eltwise) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (EltwiseKind kind : {EltwiseKind::kRelu, EltwiseKind::kGeluTanh, EltwiseKind::kSilu,
                             EltwiseKind::kTanh, EltwiseKind::kRelu6, EltwiseKind::kHardSwish,
                             EltwiseKind::kSigmoid, EltwiseKind::kGeluErf}) {
      for (int64_t n : {1, 17, 1000}) {
        Tensor x = RandomTensor({n}, 1, 8.0f),
               g = RandomTensor({n}, 2);  // past ReLU6 and hard-swish corners
        Tensor y_ref = Tensor::Empty(DType::kF32, {n}), y = y_ref, dx_ref = y_ref, dx = y_ref;
        ASSERT_TRUE(ref->EltwiseFwd(kind, n, x.data<float>(), y_ref.data<float>()).ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->EltwiseFwd(kind, n, m.P(x), m.P(y));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(y, y_ref), 1e-5) << static_cast<int>(kind);
        ASSERT_TRUE(
            ref->EltwiseBwd(kind, n, x.data<float>(), g.data<float>(), dx_ref.data<float>()).ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->EltwiseBwd(kind, n, m.P(x), m.P(g), m.P(dx));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(dx, dx_ref), 1e-5) << static_cast<int>(kind);
      }
    }
  }
}

TEST(BackendConformance, LayerNorm) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 8}, {7, 33}, {64, 512}}) {
      Tensor x = RandomTensor({rows, cols}, 3, 3.0f), gamma = RandomTensor({cols}, 4);
      Tensor beta = RandomTensor({cols}, 5), g = RandomTensor({rows, cols}, 6);
      auto run = [&](Backend& b, Tensor& y, Tensor& dx, Tensor& dg, Tensor& db) {
        Tensor mean = Tensor::Empty(DType::kF32, {rows}), var = mean;
        ASSERT_TRUE(OnDevice(b, [&](Mirror& m) {
                      return b.LayerNormFwd(rows, cols, 1e-6f, m.P(x), m.P(gamma), m.P(beta),
                                            m.P(y), m.P(mean), m.P(var));
                    }).ok());
        absl::Status s = OnDevice(b, [&](Mirror& m) {
          return b.LayerNormBwd(rows, cols, 1e-6f, m.P(x), m.P(mean), m.P(var), m.P(gamma), m.P(g),
                                m.P(dx), m.P(dg), m.P(db));
        });
        ASSERT_TRUE(s.ok()) << s;
      };
      Tensor y_ref = Tensor::Empty(DType::kF32, {rows, cols}), y = y_ref, dx_ref = y_ref,
             dx = y_ref;
      Tensor dg_ref = Tensor::Empty(DType::kF32, {cols}), dg = dg_ref, db_ref = dg_ref, db = dg_ref;
      run(*ref, y_ref, dx_ref, dg_ref, db_ref);
      run(*backend, y, dx, dg, db);
      EXPECT_LT(MaxRelativeToPeak(y, y_ref), 1e-5);
      EXPECT_LT(MaxRelativeToPeak(dx, dx_ref), 1e-4);
      EXPECT_LT(MaxRelativeToPeak(dg, dg_ref), 1e-4);
      EXPECT_LT(MaxRelativeToPeak(db, db_ref), 1e-5);
    }
  }
}

TEST(BackendConformance, BatchNorm) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (auto [rows, ch] : std::vector<std::pair<int64_t, int64_t>>{
             // Odd shapes, then MobileNetV2's: channels that are not a multiple of the vector
             // width (24: oneDNN's AVX2 kernel on any ISA), few rows (1x1 maps), many rows.
             {3, 1},
             {7, 33},
             {2 * 14 * 14, 64},
             {64, 3},
             {8, 1280},
             {32, 96},
             {512, 24},
             {2048, 16},
             {8192, 24}}) {
      Tensor x = RandomTensor({rows, ch}, 11, 3.0f), gamma = RandomTensor({ch}, 12);
      Tensor beta = RandomTensor({ch}, 13), g = RandomTensor({rows, ch}, 14);
      Tensor running_mean = RandomTensor({ch}, 15), running_var = RandomTensor({ch}, 16);
      for (float& v : running_var.span<float>()) v = std::abs(v) + 0.1f;
      struct Out {
        Tensor y, mean, var, dx, dg, db, y_eval;
      };
      auto run = [&](Backend& b) {
        Out o;
        o.y = Tensor::Empty(DType::kF32, {rows, ch});
        o.dx = o.y;
        o.y_eval = o.y;
        o.mean = Tensor::Empty(DType::kF32, {ch});
        o.var = o.mean;
        o.dg = o.mean;
        o.db = o.mean;
        EXPECT_TRUE(OnDevice(b, [&](Mirror& m) {
                      return b.BatchNormFwd(rows, ch, 1e-5f, true, m.P(x), m.P(gamma), m.P(beta),
                                            m.P(o.mean), m.P(o.var), m.P(o.y));
                    }).ok());
        EXPECT_TRUE(OnDevice(b, [&](Mirror& m) {
                      return b.BatchNormBwd(rows, ch, 1e-5f, m.P(x), m.P(o.mean), m.P(o.var),
                                            m.P(gamma), m.P(g), m.P(o.dx), m.P(o.dg), m.P(o.db));
                    }).ok());
        EXPECT_TRUE(OnDevice(b, [&](Mirror& m) {
                      return b.BatchNormFwd(rows, ch, 1e-5f, false, m.P(x), m.P(gamma), m.P(beta),
                                            m.P(running_mean), m.P(running_var), m.P(o.y_eval));
                    }).ok());
        return o;
      };
      Out want = run(*ref), got = run(*backend);
      EXPECT_LT(MaxRelativeToPeak(got.y, want.y), 1e-5) << rows << "x" << ch;
      EXPECT_LT(MaxRelativeToPeak(got.mean, want.mean), 1e-5);
      EXPECT_LT(MaxRelativeToPeak(got.var, want.var), 1e-5);
      EXPECT_LT(MaxRelativeToPeak(got.dx, want.dx), 1e-4) << rows << "x" << ch;
      EXPECT_LT(MaxRelativeToPeak(got.dg, want.dg), 1e-4);
      EXPECT_LT(MaxRelativeToPeak(got.db, want.db), 1e-5);
      EXPECT_LT(MaxRelativeToPeak(got.y_eval, want.y_eval), 1e-5);
    }
  }
}

TEST(BackendConformance, Binary) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (BinaryKind kind : {BinaryKind::kAdd, BinaryKind::kMul}) {
      for (int64_t n : {1, 37, 70000}) {
        Tensor a = RandomTensor({n}, 1, 3.0f), b = RandomTensor({n}, 2, 3.0f);
        Tensor want = Tensor::Empty(DType::kF32, {n}), got = want;
        ASSERT_TRUE(
            ref->Binary(kind, n, a.data<float>(), b.data<float>(), want.data<float>()).ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->Binary(kind, n, m.P(a), m.P(b), m.P(got));
                    }).ok());
        EXPECT_EQ(MaxRelativeToPeak(got, want), 0.0) << backend->name() << " n=" << n;
        // In place, as the gated MLP's backward uses it.
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->Binary(kind, n, m.P(a), m.P(b), m.P(a));
                    }).ok());
        EXPECT_EQ(MaxRelativeToPeak(a, want), 0.0) << backend->name() << " in place";
      }
    }
  }
}

TEST(BackendConformance, Transpose) {
  for (auto& backend : Backends()) {
    for (auto [rows, cols] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 5}, {64, 17}, {300, 768}}) {
      Tensor x = RandomTensor({rows, cols}, 5), got = Tensor::Empty(DType::kF32, {cols, rows});
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->Transpose(rows, cols, m.P(x), m.P(got));
                  }).ok());
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) {
          ASSERT_EQ(got.data<float>()[c * rows + r], x.data<float>()[r * cols + c])
              << backend->name() << " " << rows << "x" << cols;
        }
      }
    }
  }
}

TEST(BackendConformance, Rotary) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (auto [rows, positions, dim] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {3, 3, 2}, {2 * 4 * 7, 7, 16}, {8 * 128, 128, 64}}) {
      const int64_t h = dim / 2;
      Tensor x = RandomTensor({rows, dim}, 3), cos = RandomTensor({positions, h}, 4);
      Tensor sin = Tensor::Empty(DType::kF32, {positions, h});
      for (int64_t i = 0; i < positions * h; ++i) {  // a real rotation: cos² + sin² = 1
        const float angle = static_cast<float>(i) * 0.37f;
        cos.data<float>()[i] = std::cos(angle);
        sin.data<float>()[i] = std::sin(angle);
      }
      for (bool inverse : {false, true}) {
        RotaryDesc d{rows, positions, dim, inverse};
        Tensor want = Tensor::Empty(DType::kF32, {rows, dim}), got = want, back = want;
        ASSERT_TRUE(ref->Rotary(d, cos.data<float>(), sin.data<float>(), x.data<float>(),
                                want.data<float>())
                        .ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->Rotary(d, m.P(cos), m.P(sin), m.P(x), m.P(got));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(got, want), 1e-6) << backend->name();
        // The inverse undoes the forward: the rotation is orthogonal.
        d.inverse = !inverse;
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->Rotary(d, m.P(cos), m.P(sin), m.P(got), m.P(back));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(back, x), 1e-5) << backend->name();
      }
      // Element 0 of row 0 by hand: x0·cos0 − x_h·sin0.
      RotaryDesc d{rows, positions, dim, false};
      Tensor y = Tensor::Empty(DType::kF32, {rows, dim});
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->Rotary(d, m.P(cos), m.P(sin), m.P(x), m.P(y));
                  }).ok());
      EXPECT_FLOAT_EQ(y.data<float>()[0], x.data<float>()[0] * cos.data<float>()[0] -
                                              x.data<float>()[h] * sin.data<float>()[0]);
    }
    EXPECT_FALSE(OnDevice(*backend, [&](Mirror& m) {
                   return backend->Rotary({4, 3, 8, false}, nullptr, nullptr, nullptr, nullptr);
                 }).ok());
    EXPECT_FALSE(OnDevice(*backend, [&](Mirror& m) {
                   return backend->Rotary({4, 4, 7, false}, nullptr, nullptr, nullptr, nullptr);
                 }).ok());
  }
}

TEST(BackendConformance, Softmax) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (bool log : {false, true}) {
      Tensor x = RandomTensor({9, 37}, 7, 4.0f), g = RandomTensor({9, 37}, 8);
      Tensor y_ref = Tensor::Empty(DType::kF32, {9, 37}), y = y_ref;
      ASSERT_TRUE(ref->SoftmaxFwd(9, 37, log, x.data<float>(), y_ref.data<float>()).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->SoftmaxFwd(9, 37, log, m.P(x), m.P(y));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(y, y_ref), 1e-5) << log;
      if (log) continue;
      Tensor dx_ref = y_ref, dx = y_ref;
      ASSERT_TRUE(
          ref->SoftmaxBwd(9, 37, y_ref.data<float>(), g.data<float>(), dx_ref.data<float>()).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->SoftmaxBwd(9, 37, m.P(y_ref), m.P(g), m.P(dx));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(dx, dx_ref), 1e-5);
    }
  }
}

TEST(BackendConformance, Pooling) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (bool max : {true, false}) {
      for (PoolDesc d : {PoolDesc{2, 8, 8, 3, 2, 2, 2, 2, 0, 0, 0, 0, max},
                         PoolDesc{1, 7, 5, 4, 3, 3, 2, 2, 1, 1, 1, 1, max},
                         PoolDesc{3, 4, 4, 2, 4, 4, 1, 1, 0, 0, 0, 0, max}}) {
        const Shape src{d.n, d.h, d.w, d.c}, dst{d.n, d.out_h(), d.out_w(), d.c};
        Tensor x = RandomTensor(src, 9), g = RandomTensor(dst, 10);
        Tensor y_ref = Tensor::Empty(DType::kF32, dst), y = y_ref;
        ASSERT_TRUE(ref->PoolFwd(d, x.data<float>(), y_ref.data<float>()).ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->PoolFwd(d, m.P(x), m.P(y));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(y, y_ref), 1e-6) << max;
        Tensor dx_ref = Tensor::Empty(DType::kF32, src), dx = dx_ref;
        ASSERT_TRUE(ref->PoolBwd(d, x.data<float>(), g.data<float>(), dx_ref.data<float>()).ok());
        ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                      return backend->PoolBwd(d, m.P(x), m.P(g), m.P(dx));
                    }).ok());
        EXPECT_LT(MaxRelativeToPeak(dx, dx_ref), 1e-6) << max;
      }
    }
    Tensor dummy_host = Tensor::Zeros(DType::kF32, {4}), q_host = Tensor::Zeros(DType::kS8, {4});
    Mirror md(*backend);
    float* dummy = md.P(dummy_host);
    PoolDesc too_big{1, 2, 2, 1, 3, 3, 1, 1, 0, 0, 0, 0, true};
    EXPECT_EQ(OnDevice(*backend, [&](Mirror& m) { return backend->PoolFwd(too_big, dummy, dummy); })
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
}

}  // namespace
}  // namespace qtrain
