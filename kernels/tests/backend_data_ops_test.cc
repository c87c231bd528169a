// The conformance rows of the data-movement and small float ops (backend.h: Copy, ReduceRows,
// BroadcastRows, Axpby, Fill, RMSNorm, DropoutMask, Gather / ScatterAdd, AttentionMask) and of
// the tensor-level ops' checks: every backend against the reference backend's plain loops, on
// the backend's own device (tensors uploaded and read back through its copies).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "kernels/backend/backend.h"
#include "kernels/tests/test_util.h"

namespace qtrain {
namespace {

using testing::Download;
using testing::MaxRelativeToPeak;
using testing::Mirror;
using testing::OnDevice;
using testing::RandomTensor;
using testing::Upload;

std::vector<std::unique_ptr<Backend>> Backends() { return testing::ConformanceBackends(); }

float* F(Tensor& t) { return t.data<float>(); }
const float* F(const Tensor& t) { return t.data<float>(); }

bool Same(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && std::memcmp(a.raw(), b.raw(), a.nbytes()) == 0;
}

TEST(BackendConformance, Copy) {
  auto ref = MakeReferenceBackend();
  // Heads split from a packed projection, a broadcast row, a block transpose, an accumulation
  // where blocks land on the same floats (grouped heads' gradients).
  std::vector<CopyDesc> cases;
  CopyDesc split;
  split.count = {2, 5, 3};
  split.src_stride = {5 * 36, 36, 4};
  split.dst_stride = {3 * 5 * 4, 4, 5 * 4};
  split.src_offset = 12;
  split.block = 4;
  cases.push_back(split);
  CopyDesc broadcast;
  broadcast.count = {7, 1, 1};
  broadcast.dst_stride = {9, 0, 0};
  broadcast.dst_offset = 1;
  broadcast.block = 8;
  cases.push_back(broadcast);
  CopyDesc transpose;
  transpose.count = {3, 17, 19};
  transpose.src_stride = {17 * 19, 19, 1};
  transpose.dst_stride = {17 * 19, 1, 17};
  transpose.block = 1;
  cases.push_back(transpose);
  CopyDesc sum;
  sum.count = {4, 3, 1};
  sum.src_stride = {3 * 33, 33, 0};
  sum.dst_stride = {33, 0, 0};
  sum.block = 33;
  sum.accumulate = true;
  cases.push_back(sum);
  for (auto& backend : Backends()) {
    for (const CopyDesc& d : cases) {
      Tensor src = RandomTensor({3 * 17 * 19 + 64}, 1);
      Tensor want = RandomTensor({3 * 17 * 19 + 64}, 2), got = want;
      ASSERT_TRUE(ref->Copy(d, F(src), F(want)).ok());
      ASSERT_TRUE(
          OnDevice(*backend, [&](Mirror& m) { return backend->Copy(d, m.P(src), m.P(got)); }).ok());
      if (d.accumulate) {
        EXPECT_LT(MaxRelativeToPeak(got, want), 1e-6) << backend->name();
      } else {
        EXPECT_TRUE(Same(got, want)) << backend->name();  // copies are exact
      }
    }
    // The tensor-level copy refuses blocks reaching past either tensor, naming the extents.
    Tensor small = Tensor::Zeros(DType::kF32, {10}), big = Tensor::Zeros(DType::kF32, {100});
    Tensor big_on = Upload(*backend, big);
    absl::Status s = backend->CopyBlocks(split, Upload(*backend, small), big_on);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("of src [10]"), std::string::npos) << s;
    CopyDesc negative;
    negative.src_stride[0] = -1;
    EXPECT_EQ(
        OnDevice(*backend, [&](Mirror& m) { return backend->Copy(negative, m.P(big), m.P(big)); })
            .code(),
        absl::StatusCode::kInvalidArgument);
  }
}

TEST(BackendConformance, Rows) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (auto [batch, rows, cols] :
         std::vector<std::array<int64_t, 3>>{{1, 1, 1}, {1, 300, 17}, {3, 49, 64}, {2, 7, 1000}}) {
      for (float divisor : {1.0f, 49.0f}) {
        for (bool accumulate : {false, true}) {
          const RowsDesc d{batch, rows, cols, divisor, accumulate};
          Tensor big = RandomTensor({batch, rows, cols}, 3), small = RandomTensor({batch, cols}, 4);
          Tensor want = small, got = small;
          ASSERT_TRUE(ref->ReduceRows(d, F(big), F(want)).ok());
          ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                        return backend->ReduceRows(d, m.P(big), m.P(got));
                      }).ok());
          EXPECT_LT(MaxRelativeToPeak(got, want), 1e-5) << backend->name() << " reduce " << rows;
          Tensor want_big = big, got_big = big;
          ASSERT_TRUE(ref->BroadcastRows(d, F(small), F(want_big)).ok());
          ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                        return backend->BroadcastRows(d, m.P(small), m.P(got_big));
                      }).ok());
          EXPECT_LT(MaxRelativeToPeak(got_big, want_big), 1e-6) << backend->name();
        }
      }
    }
    EXPECT_EQ(OnDevice(*backend,
                       [&](Mirror& m) {
                         return backend->ReduceRows({1, 2, 3, 0.0f, false}, nullptr, nullptr);
                       })
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(BackendConformance, AxpbyAndFill) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (int64_t n : {1, 17, 1 << 17}) {
      Tensor x = RandomTensor({n}, 5), want = RandomTensor({n}, 6), got = want;
      ASSERT_TRUE(ref->Axpby(n, 0.3f, F(x), 0.7f, F(want)).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->Axpby(n, 0.3f, m.P(x), 0.7f, m.P(got));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(got, want), 1e-6) << backend->name();
      ASSERT_TRUE(ref->Axpby(n, 0.0f, nullptr, -2.0f, F(want)).ok());  // a scale
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->Axpby(n, 0.0f, nullptr, -2.0f, m.P(got));
                  }).ok());
      EXPECT_TRUE(Same(got, want)) << backend->name();
      ASSERT_TRUE(
          OnDevice(*backend, [&](Mirror& m) { return backend->Fill(n, 1.5f, m.P(got)); }).ok());
      for (float v : got.span<float>()) ASSERT_EQ(v, 1.5f);
    }
  }
}

TEST(BackendConformance, RmsNorm) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (auto [rows, cols] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 33}, {64, 256}}) {
      Tensor x = RandomTensor({rows, cols}, 7), gamma = RandomTensor({cols}, 8);
      Tensor dy = RandomTensor({rows, cols}, 9);
      Tensor want = Tensor::Empty(DType::kF32, {rows, cols}), got = want;
      Tensor want_rstd = Tensor::Empty(DType::kF32, {rows}), got_rstd = want_rstd;
      ASSERT_TRUE(ref->RmsNormFwd(rows, cols, 1e-6f, F(x), F(gamma), F(want), F(want_rstd)).ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->RmsNormFwd(rows, cols, 1e-6f, m.P(x), m.P(gamma), m.P(got),
                                               m.P(got_rstd));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(got, want), 1e-6) << backend->name();
      EXPECT_LT(MaxRelativeToPeak(got_rstd, want_rstd), 1e-6) << backend->name();
      // Row 0, element 0 by hand: x / sqrt(mean(x²) + eps) · γ.
      double sq = 0;
      for (int64_t j = 0; j < cols; ++j) sq += std::pow(x.data<float>()[j], 2);
      EXPECT_NEAR(got.data<float>()[0],
                  x.data<float>()[0] / std::sqrt(sq / cols + 1e-6) * gamma.data<float>()[0],
                  1e-5 * std::abs(got.data<float>()[0]) + 1e-6);
      Tensor want_dx = want, got_dx = want, want_dg = gamma, got_dg = gamma;
      ASSERT_TRUE(
          ref->RmsNormBwd(rows, cols, F(x), F(want_rstd), F(gamma), F(dy), F(want_dx), F(want_dg))
              .ok());
      ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                    return backend->RmsNormBwd(rows, cols, m.P(x), m.P(got_rstd), m.P(gamma),
                                               m.P(dy), m.P(got_dx), m.P(got_dg));
                  }).ok());
      EXPECT_LT(MaxRelativeToPeak(got_dx, want_dx), 1e-5) << backend->name();
      EXPECT_LT(MaxRelativeToPeak(got_dg, want_dg), 1e-5) << backend->name();
    }
  }
}

TEST(BackendConformance, DropoutMaskIsTheSameEverywhere) {
  auto ref = MakeReferenceBackend();
  const CounterRng rng(42, 3);
  for (auto& backend : Backends()) {
    Tensor want = Tensor::Empty(DType::kF32, {4099}), got = want;
    ASSERT_TRUE(ref->DropoutMask(4099, rng, 7 << 24, 0.25f, F(want)).ok());
    ASSERT_TRUE(OnDevice(*backend, [&](Mirror& m) {
                  return backend->DropoutMask(4099, rng, 7 << 24, 0.25f, m.P(got));
                }).ok());
    EXPECT_TRUE(Same(got, want)) << backend->name();
    int64_t kept = 0;
    for (float v : got.span<float>()) {
      ASSERT_TRUE(v == 0.0f || v == 1.0f / 0.75f) << v;
      kept += v != 0.0f;
    }
    EXPECT_NEAR(static_cast<double>(kept) / 4099, 0.75, 0.03);
  }
}

TEST(BackendConformance, GatherAndScatterAdd) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    Tensor table = RandomTensor({11, 6}, 10);
    Tensor ids = Tensor::Empty(DType::kS32, {2, 4});
    const int32_t values[] = {3, 0, 10, 3, 5, 5, 1, 9};
    std::memcpy(ids.raw(), values, sizeof(values));
    absl::StatusOr<Tensor> got = backend->Embed(Upload(*backend, table), Upload(*backend, ids));
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->shape(), (Shape{2, 4, 6}));
    got = Download(*backend, *got);
    Tensor want = Tensor::Empty(DType::kF32, {2, 4, 6});
    ASSERT_TRUE(ref->Gather(8, 11, 6, F(table), values, F(want)).ok());
    EXPECT_TRUE(Same(*got, want)) << backend->name();
    EXPECT_EQ(got->data<float>()[2 * 6 + 1], table.data<float>()[10 * 6 + 1]);
    // The gradient: repeated ids sum.
    Tensor dy = RandomTensor({2, 4, 6}, 11);
    Tensor want_grad = Tensor::Zeros(DType::kF32, {11, 6}), got_grad = want_grad;
    ASSERT_TRUE(ref->ScatterAdd(8, 11, 6, values, F(dy), F(want_grad)).ok());
    Tensor grad_on = Upload(*backend, got_grad);
    ASSERT_TRUE(backend->EmbedGrad(Upload(*backend, ids), Upload(*backend, dy), grad_on).ok());
    got_grad = Download(*backend, grad_on);
    EXPECT_LT(MaxRelativeToPeak(got_grad, want_grad), 1e-6) << backend->name();
    EXPECT_FLOAT_EQ(got_grad.data<float>()[3 * 6], dy.data<float>()[0] + dy.data<float>()[3 * 6]);
    // An id outside the table is named, and nothing is written.
    ids.data<int32_t>()[5] = 11;
    absl::StatusOr<Tensor> bad = backend->Embed(Upload(*backend, table), Upload(*backend, ids));
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(bad.status().message().find("id 11 at position 5 is outside [0, 11)"),
              std::string::npos)
        << bad.status();
    Tensor before = got_grad;
    EXPECT_FALSE(backend->EmbedGrad(Upload(*backend, ids), Upload(*backend, dy), grad_on).ok());
    EXPECT_TRUE(Same(Download(*backend, grad_on), before));
  }
}

TEST(BackendConformance, AttentionMask) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    const AttentionMaskDesc d{2, 3, 5, true};
    Tensor padding = Tensor::Zeros(DType::kU8, {2, 5});
    padding.data<uint8_t>()[1 * 5 + 2] = 1;  // example 1, key 2
    Tensor scores = RandomTensor({6, 5, 5}, 12), want = scores;
    Tensor scores_on = Upload(*backend, scores), padding_on = Upload(*backend, padding);
    ASSERT_TRUE(backend->MaskScores(d, &padding_on, -1e30f, scores_on).ok());
    scores = Download(*backend, scores_on);
    ASSERT_TRUE(ref->AttentionMask(d, padding.data<uint8_t>(), -1e30f, F(want)).ok());
    EXPECT_TRUE(Same(scores, want)) << backend->name();
    const float* s = scores.data<float>();
    EXPECT_EQ(s[0 * 25 + 1 * 5 + 2], -1e30f);  // a later key
    EXPECT_NE(s[0 * 25 + 3 * 5 + 2], -1e30f);  // an earlier one, unpadded
    EXPECT_EQ(s[4 * 25 + 3 * 5 + 2], -1e30f);  // example 1 (heads 3..5): key 2 is padding
    Tensor wrong = Upload(*backend, Tensor::Zeros(DType::kU8, {2, 4}));
    EXPECT_EQ(backend->MaskScores(d, &wrong, 0.0f, scores_on).code(),
              absl::StatusCode::kInvalidArgument);
    // A class token before the flagged tokens: key 0 is never padding, key j the flag j − 1.
    const AttentionMaskDesc prefixed{2, 3, 5, false, 1};
    Tensor flags = Tensor::Zeros(DType::kU8, {2, 4});
    flags.data<uint8_t>()[1 * 4 + 1] = 1;  // example 1, key 2
    Tensor got = RandomTensor({6, 5, 5}, 13), expected = got;
    Tensor got_on = Upload(*backend, got), flags_on = Upload(*backend, flags);
    ASSERT_TRUE(backend->MaskScores(prefixed, &flags_on, -1e30f, got_on).ok());
    got = Download(*backend, got_on);
    ASSERT_TRUE(ref->AttentionMask(prefixed, flags.data<uint8_t>(), -1e30f, F(expected)).ok());
    EXPECT_TRUE(Same(got, expected)) << backend->name();
    for (int64_t i = 0; i < 6 * 25; ++i) {
      const bool masked = i / 75 == 1 && i % 5 == 2;  // example 1's heads, key 2
      EXPECT_EQ(got.data<float>()[i] == -1e30f, masked) << backend->name() << " " << i;
    }
    EXPECT_EQ(backend->MaskScores(prefixed, &padding_on, 0.0f, got_on).code(),  // (2, 5) flags
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(backend->MaskScores({2, 3, 5, false, 6}, nullptr, 0.0f, got_on).code(),
              absl::StatusCode::kInvalidArgument);
  }
}

// Optimizer steps: the same bits as the reference's element formula (row_ops promises them on
// every ISA), dry runs write nothing and see an overflow coming.
TEST(BackendConformance, OptimizerUpdates) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    for (int64_t n : {1, 1000, 1 << 17}) {
      Tensor w = RandomTensor({n}, 16), g = RandomTensor({n}, 17), m = RandomTensor({n}, 18);
      Tensor v = RandomTensor({n}, 19);
      for (float& x : v.span<float>()) x = std::abs(x);
      const AdamWHyper adamw{0.5f, 1e-2f, 0.1f, 0.9f, 0.999f, 1e-8f, 0.19f, 0.002f};
      Tensor w1 = w, m1 = m, v1 = v;
      Tensor w2 = Upload(*backend, Tensor(w)), m2 = Upload(*backend, Tensor(m)),
             v2 = Upload(*backend, Tensor(v));
      const Tensor g_on = Upload(*backend, g);
      absl::StatusOr<UpdateResult> want = ref->AdamW(adamw, w1, m1, v1, g, false);
      absl::StatusOr<UpdateResult> got = backend->AdamW(adamw, w2, m2, v2, g_on, false);
      ASSERT_TRUE(want.ok() && got.ok());
      EXPECT_TRUE(Same(w1, Download(*backend, w2)) && Same(m1, Download(*backend, m2)) &&
                  Same(v1, Download(*backend, v2)))
          << backend->name() << " " << n;
      EXPECT_EQ(got->maxima.w, want->maxima.w);
      EXPECT_EQ(got->maxima.v, want->maxima.v);
      for (bool nesterov : {false, true}) {
        const SgdHyper sgd{1.0f, 0.1f, 0.01f, 0.9f, nesterov};
        Tensor sw1 = w, sm1 = m, sw2 = Upload(*backend, Tensor(w)),
               sm2 = Upload(*backend, Tensor(m));
        ASSERT_TRUE(ref->Sgd(sgd, sw1, &sm1, g, false).ok());
        ASSERT_TRUE(backend->Sgd(sgd, sw2, &sm2, g_on, false).ok());
        EXPECT_TRUE(Same(sw1, Download(*backend, sw2)) && Same(sm1, Download(*backend, sm2)))
            << backend->name() << " nesterov";
        ASSERT_TRUE(ref->Sgd(sgd, sw1, nullptr, g, false).ok());
        ASSERT_TRUE(backend->Sgd(sgd, sw2, nullptr, g_on, false).ok());
        EXPECT_TRUE(Same(sw1, Download(*backend, sw2))) << backend->name() << " plain";
      }
      // A learning rate that overflows: the dry run says so and leaves w as it was.
      const SgdHyper huge{1.0f, 3e38f, 0.0f, 0.0f, false};
      Tensor before = w;
      g.data<float>()[0] = 2.0f;  // 3e38 · 2 overflows
      Tensor w_on = Upload(*backend, Tensor(w)), g_huge = Upload(*backend, g);
      absl::StatusOr<UpdateResult> dry = backend->Sgd(huge, w_on, nullptr, g_huge, true);
      ASSERT_TRUE(dry.ok());
      EXPECT_FALSE(dry->finite);
      EXPECT_TRUE(Same(Download(*backend, w_on), before));
      absl::StatusOr<double> want_sq = ref->SumOfSquares({&w, &g});
      absl::StatusOr<double> got_sq = backend->SumOfSquares({&w_on, &g_huge});
      ASSERT_TRUE(want_sq.ok() && got_sq.ok());
      EXPECT_NEAR(*got_sq, *want_sq, 1e-12 * *want_sq);
    }
    Tensor w = Upload(*backend, RandomTensor({4}, 1)), g = Upload(*backend, RandomTensor({5}, 2));
    EXPECT_EQ(backend->Sgd(SgdHyper{}, w, nullptr, g, false).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
}

TEST(BackendConformance, Losses) {
  auto ref = MakeReferenceBackend();
  for (auto& backend : Backends()) {
    // 2 sequences of 4 tokens over 7 classes, labels shifted, one ignored, one padded.
    CrossEntropyDesc d{8, 7, 4, true, -100};
    Tensor logits = RandomTensor({2, 4, 7}, 20);
    Tensor targets = Tensor::Empty(DType::kS32, {2, 4});
    const int32_t labels[] = {1, 6, -100, 3, 0, 2, 5, 4};
    std::memcpy(targets.raw(), labels, sizeof(labels));
    Tensor padding = Tensor::Zeros(DType::kU8, {8});
    padding.data<uint8_t>()[5] = 1;
    Tensor want_grad, got_grad;
    absl::StatusOr<CrossEntropyResult> want =
        ref->SoftmaxCrossEntropy(d, logits, targets, &padding, &want_grad);
    const Tensor padding_on = Upload(*backend, padding), targets_on = Upload(*backend, targets);
    absl::StatusOr<CrossEntropyResult> got = backend->SoftmaxCrossEntropy(
        d, Upload(*backend, logits), targets_on, &padding_on, &got_grad);
    ASSERT_TRUE(want.ok() && got.ok()) << got.status();
    got_grad = Download(*backend, got_grad);
    // Scored: rows 0 and 2 (labels 6 and 3; row 1's label is ignored), 5 and 6 (labels 5 and
    // 4; row 4's label sits at the padded position 5); each sequence's last row has none.
    EXPECT_EQ(got->count, 4);
    EXPECT_EQ(want->count, 4);
    EXPECT_NEAR(got->loss_sum, want->loss_sum, 1e-5 * want->loss_sum);
    EXPECT_EQ(got->correct, want->correct);
    EXPECT_LT(MaxRelativeToPeak(got_grad, want_grad), 1e-5);
    // By hand: Σ −log softmax(row)[label] over the scored rows.
    double rows_sum = 0;
    for (int row : {0, 2, 5, 6}) {
      const int label = row == 5 ? 5 : (row == 6 ? 4 : (row == 0 ? 6 : 3));
      double zr = 0;
      for (int c = 0; c < 7; ++c)
        zr += std::exp(static_cast<double>(logits.data<float>()[row * 7 + c]));
      rows_sum += std::log(zr) - logits.data<float>()[row * 7 + label];
    }
    EXPECT_NEAR(got->loss_sum, rows_sum, 1e-5 * rows_sum);
    EXPECT_EQ(got_grad.data<float>()[1 * 7 + 2], 0.0f);  // an ignored row has no gradient
    Tensor y = RandomTensor({3, 5}, 21), t = RandomTensor({3, 5}, 22), g1, g2;
    absl::StatusOr<double> want_sq = ref->SquaredError(y, t, &g1);
    absl::StatusOr<double> got_sq =
        backend->SquaredError(Upload(*backend, y), Upload(*backend, t), &g2);
    ASSERT_TRUE(want_sq.ok() && got_sq.ok());
    EXPECT_EQ(*got_sq, *want_sq);
    EXPECT_TRUE(Same(g1, Download(*backend, g2)));
    // The input checks name the value and where it is.
    absl::Status s = backend->CheckLabels(targets_on, 7, false, 0);
    EXPECT_NE(s.message().find("label -100 at position 2 is outside [0, 7)"), std::string::npos)
        << s;
    EXPECT_TRUE(backend->CheckLabels(targets_on, 7, true, -100).ok());
    t.data<float>()[4] = std::nanf("");
    s = backend->CheckFinite(Upload(*backend, t));
    EXPECT_NE(s.message().find("element 4 is nan"), std::string::npos) << s;
  }
}

// The tensor-level ops check dtype, device and sizes before running, and name what they got.
TEST(BackendConformance, TensorOpsNameWhatTheyRefuse) {
  for (auto& backend : Backends()) {
    Tensor a = Upload(*backend, RandomTensor({2, 3}, 13)),
           b = Upload(*backend, RandomTensor({3, 3}, 14));
    absl::StatusOr<Tensor> sum = backend->Add(a, b);
    EXPECT_EQ(sum.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(sum.status().message().find("add: f32[2, 3] and f32[3, 3]"), std::string::npos)
        << sum.status();
    Tensor ints = Upload(*backend, Tensor::Zeros(DType::kS32, {2, 3}));
    absl::StatusOr<Tensor> act = backend->Activation(EltwiseKind::kRelu, ints);
    EXPECT_NE(act.status().message().find(
                  absl::StrCat("expected f32 on ", backend->device().Name(), ", got s32[2, 3]")),
              std::string::npos)
        << act.status();
    Tensor elsewhere = Tensor::OnDevice(
        DType::kF32, {2, 3}, Device{DeviceKind::kCuda, 0},
        std::shared_ptr<std::byte>(new std::byte[24], std::default_delete<std::byte[]>()));
    absl::Status s = backend->AddInto(a, elsewhere);
    EXPECT_NE(s.message().find("on cuda:0"), std::string::npos) << s;
    Backend::NormSaved saved;
    EXPECT_FALSE(backend->LayerNorm(1e-5f, a, b, b, saved).ok());  // 3 features, not 9
    // What they compute: the mean over rows and its spread back.
    Tensor x = RandomTensor({2, 4, 3}, 15);
    const Tensor x_on = Upload(*backend, x);
    absl::StatusOr<Tensor> mean_on = backend->MeanOverRows(x_on, 2, 4);
    ASSERT_TRUE(mean_on.ok());
    absl::StatusOr<Tensor> mean = Download(*backend, *mean_on);
    EXPECT_NEAR(mean->data<float>()[3 + 1],
                (x.data<float>()[12 + 1] + x.data<float>()[15 + 1] + x.data<float>()[18 + 1] +
                 x.data<float>()[21 + 1]) /
                    4,
                1e-6);
    absl::StatusOr<Tensor> spread = backend->MeanOverRowsGrad(*mean_on, 4, {2, 2, 2, 3});
    ASSERT_TRUE(spread.ok());
    spread = Download(*backend, *spread);
    EXPECT_EQ(spread->data<float>()[12 + 1], mean->data<float>()[3 + 1] / 4);
    absl::StatusOr<Tensor> t = backend->Transposed(x_on);
    ASSERT_TRUE(t.ok());
    t = Download(*backend, *t);
    EXPECT_EQ(t->shape(), (Shape{2, 3, 4}));
    EXPECT_EQ(t->data<float>()[(1 * 3 + 2) * 4 + 1], x.data<float>()[(1 * 4 + 1) * 3 + 2]);
  }
}

}  // namespace
}  // namespace qtrain
