// Finite-difference checks of every module and loss in float mode, on the reference backend
// (plain loops) and on oneDNN: the analytic gradients of parameters and inputs must match
// central differences of the loss.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;

struct Case {
  const char* name;
  const char* spec;
};

Tensor RandomInputs(const Model& m, int64_t batch, uint32_t seed) {
  Shape shape{batch};
  shape.insert(shape.end(), m.spec().input().shape().begin(), m.spec().input().shape().end());
  std::mt19937 gen(seed);
  if (m.spec().input().kind() == proto::InputSpec::TOKENS) {
    Tensor t = Tensor::Empty(DType::kS32, shape);
    std::uniform_int_distribution<int> dist(0, 9);
    for (int32_t& v : t.span<int32_t>()) {
      v = dist(gen);
    }
    return t;
  }
  Tensor t = Tensor::Empty(DType::kF32, shape);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (float& v : t.span<float>()) {
    v = dist(gen);
  }
  return t;
}

Tensor RandomTargets(const Model& m, int64_t batch, uint32_t seed) {
  std::mt19937 gen(seed);
  Shape shape{batch};
  const Shape& out = m.output_shape();
  if (m.spec().loss().kind() == proto::Loss::MSE) {
    shape.insert(shape.end(), out.begin(), out.end());
    Tensor t = Tensor::Empty(DType::kF32, shape);
    std::normal_distribution<float> dist;
    for (float& v : t.span<float>()) {
      v = dist(gen);
    }
    return t;
  }
  shape.insert(shape.end(), out.begin(), out.end() - 1);
  Tensor t = Tensor::Empty(DType::kS32, shape);
  std::uniform_int_distribution<int> dist(0, static_cast<int>(out.back()) - 1);
  for (int32_t& v : t.span<int32_t>()) {
    v = dist(gen);
  }
  if (m.spec().loss().has_ignore_index() && t.numel() > 1) {
    t.data<int32_t>()[1] = static_cast<int32_t>(m.spec().loss().ignore_index());
  }
  return t;
}

// Loss of one training-mode pass (fixed step, so dropout masks repeat); optionally backward.
double Loss(Model& m, Backend& b, const Tensor& x, const Tensor& t, Tensor* dx) {
  QuantStatsMap stats;
  CounterRng rng(7, 0);
  StepContext ctx;
  ctx.backend = &b;
  ctx.training = true;
  ctx.stats = &stats;
  ctx.rng = &rng;
  ctx.step = 3;
  Tensor padding = Tensor::Zeros(DType::kU8, x.shape());  // as the trainer flags the pad_id
  if (m.spec().input().has_pad_id()) {
    for (int64_t i = 0; i < x.numel(); ++i) {
      padding.data<uint8_t>()[i] = x.data<int32_t>()[i] == m.spec().input().pad_id();
    }
    ctx.padding = &padding;
  }
  auto y = m.root().Forward(ctx, x);
  EXPECT_TRUE(y.ok()) << y.status();
  auto loss = ComputeLoss(b, m.spec().loss(), *y, t, dx != nullptr, ctx.padding);
  EXPECT_TRUE(loss.ok()) << loss.status();
  if (dx != nullptr) {
    for (Param* p : m.params()) {
      p->grad.SetZero();
    }
    auto g = m.root().Backward(ctx, loss->grad);
    EXPECT_TRUE(g.ok()) << g.status();
    *dx = std::move(*g);
  }
  return loss->loss;
}

// ||numeric - analytic|| / ||analytic|| over sampled elements of `value`, with an absolute floor
// of 3e-3 RMS for gradients that vanish analytically (attention's key bias): f32 central
// differences at eps 1e-3 carry noise of a few 1e-5 in deep cases (BERT's layer).
double CheckElements(Model& m, Backend& b, const Tensor& x, const Tensor& t, float* value,
                     const float* analytic, int64_t n) {
  constexpr float kEps = 1e-3f;
  double num2 = 0, den2 = 0;
  int64_t samples = 0;
  const int64_t stride = std::max<int64_t>(1, n / 24);
  for (int64_t i = 0; i < n; i += stride) {
    const float saved = value[i];
    value[i] = saved + kEps;
    const double up = Loss(m, b, x, t, nullptr);
    value[i] = saved - kEps;
    const double down = Loss(m, b, x, t, nullptr);
    value[i] = saved;
    const double numeric = (up - down) / (2.0 * kEps);
    num2 += (numeric - analytic[i]) * (numeric - analytic[i]);
    den2 += static_cast<double>(analytic[i]) * analytic[i];
    ++samples;
  }
  return std::sqrt(num2 / std::max(den2, 9e-6 * static_cast<double>(samples)));
}

class GradientTest : public ::testing::TestWithParam<std::tuple<Case, bool>> {};

TEST_P(GradientTest, MatchesFiniteDifferences) {
  const auto& [c, reference] = GetParam();
  auto backend = reference ? MakeReferenceBackend() : testing::OnednnBackend();
  auto model = Model::Build(FromJson<proto::ModelSpec>(c.spec), 11);
  ASSERT_TRUE(model.ok()) << model.status();
  Model& m = **model;
  Tensor x = RandomInputs(m, 3, 1);
  const Tensor t = RandomTargets(m, 3, 2);
  Tensor dx;
  Loss(m, *backend, x, t, &dx);
  for (Param* p : m.params()) {
    const Tensor analytic = p->grad;
    const double err = CheckElements(m, *backend, x, t, p->value.data<float>(),
                                     analytic.data<float>(), p->value.numel());
    EXPECT_LT(err, 0.02) << c.name << " param " << p->name;
  }
  if (x.dtype() == DType::kF32) {
    ASSERT_EQ(dx.shape(), x.shape()) << c.name;
    const double err =
        CheckElements(m, *backend, x, t, x.data<float>(), dx.data<float>(), x.numel());
    EXPECT_LT(err, 0.02) << c.name << " input";
  }
}

const Case kCases[] = {
    {"mlp_tokens_ce_ignore", R"({"input": {"shape": [5, 8]}, "body": {"sequential": {"layers": [
        {"linear": {"features": 6}}, {"activation": {"kind": "GELU"}},
        {"linear": {"features": 4}}]}}, "loss": {"ignore_index": 3}})"},
    {"lm_shifted_labels", R"({"input": {"kind": "TOKENS", "shape": [6], "pad_id": 3},
        "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 10, "features": 5}}, {"linear": {"features": 10}}]}},
        "loss": {"ignore_index": 2, "shift_labels": true}})"},
    {"activations_mse", R"({"input": {"shape": [7]}, "body": {"sequential": {"layers": [
        {"linear": {"features": 6}}, {"activation": {"kind": "SILU"}},
        {"linear": {"features": 6}}, {"activation": {"kind": "TANH"}},
        {"linear": {"features": 5}}, {"activation": {"kind": "RELU"}},
        {"linear": {"features": 3, "no_bias": true}}]}}, "loss": {"kind": "MSE"}})"},
    {"torch_activations_mse", R"({"input": {"shape": [7]}, "body": {"sequential": {"layers": [
        {"linear": {"features": 6}}, {"activation": {"kind": "RELU6"}},
        {"linear": {"features": 6}}, {"activation": {"kind": "HARD_SWISH"}},
        {"linear": {"features": 6}}, {"activation": {"kind": "SIGMOID"}},
        {"linear": {"features": 5}}, {"activation": {"kind": "GELU_EXACT"}},
        {"linear": {"features": 3}}]}}, "loss": {"kind": "MSE"}})"},
    {"norms", R"({"input": {"shape": [4, 6]}, "body": {"sequential": {"layers": [
        {"layer_norm": {}}, {"linear": {"features": 6}}, {"rms_norm": {}},
        {"linear": {"features": 3}}]}}, "loss": {"kind": "MSE"}})"},
    {"cnn", R"({"input": {"shape": [8, 8, 2]}, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 4, "kernel_size": [3, 3], "strides": [2, 2]}},
        {"pool": {"kind": "MAX", "window": [2, 2]}},
        {"conv2d": {"features": 3, "kernel_size": [1, 1], "padding": "VALID"}},
        {"pool": {"kind": "AVG", "window": [2, 2], "strides": [1, 1], "padding": "SAME"}},
        {"flatten": {}}, {"linear": {"features": 3}}]}}})"},
    {"global_pool", R"({"input": {"shape": [5, 5, 3]}, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 4, "kernel_size": [3, 3], "padding": "VALID"}},
        {"pool": {"kind": "GLOBAL_AVG"}}, {"linear": {"features": 2}}]}}})"},
    {"resnet_block", R"({"input": {"shape": [8, 8, 3]}, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 4, "kernel_size": [3, 3], "strides": [2, 2], "no_bias": true,
                    "explicit_padding": [1, 1, 1, 1]}},
        {"batch_norm": {}}, {"activation": {"kind": "RELU"}},
        {"pool": {"kind": "MAX", "window": [3, 3], "strides": [2, 2],
                  "explicit_padding": [1, 1, 1, 1]}},
        {"residual": {
            "body": {"sequential": {"layers": [
                {"conv2d": {"features": 5, "kernel_size": [3, 3], "strides": [2, 2],
                            "no_bias": true, "explicit_padding": [1, 1, 1, 1]}},
                {"batch_norm": {"momentum": 0.2}}, {"activation": {"kind": "RELU"}},
                {"conv2d": {"features": 5, "kernel_size": [3, 3], "no_bias": true,
                            "explicit_padding": [1, 1, 1, 1]}},
                {"batch_norm": {"convention": "FLAX"}}]}},
            "shortcut": {"sequential": {"layers": [
                {"conv2d": {"features": 5, "kernel_size": [1, 1], "strides": [2, 2],
                            "no_bias": true, "padding": "VALID"}},
                {"batch_norm": {}}]}}}},
        {"activation": {"kind": "RELU"}},
        {"pool": {"kind": "GLOBAL_AVG"}}, {"batch_norm": {}}, {"linear": {"features": 3}}]}}})"},
    {"grouped_conv", R"({"input": {"shape": [7, 6, 4]}, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 6, "kernel_size": [3, 3], "feature_group_count": 2}},
        {"residual": {"body": {"sequential": {"layers": [
            {"conv2d": {"features": 12, "kernel_size": [1, 1], "no_bias": true}},
            {"activation": {"kind": "SILU"}},
            {"conv2d": {"features": 12, "kernel_size": [3, 3], "feature_group_count": 12,
                        "explicit_padding": [1, 1, 1, 1], "no_bias": true}},
            {"conv2d": {"features": 6, "kernel_size": [1, 1]}}]}}}},
        {"conv2d": {"features": 12, "kernel_size": [3, 2], "strides": [1, 2],
                    "feature_group_count": 6, "kernel_dilation": [2, 1]}},
        {"conv2d": {"features": 3, "kernel_size": [2, 2], "kernel_dilation": [3, 2],
                    "padding": "VALID"}},
        {"flatten": {}}, {"linear": {"features": 3}}]}}})"},
    {"vit_block", R"({"input": {"shape": [6, 4, 2]}, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 8, "kernel_size": [2, 2], "strides": [2, 2], "padding": "VALID"}},
        {"to_tokens": {}}, {"class_token": {}}, {"position_embedding": {}},
        {"residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}},
            {"attention": {"num_heads": 2, "packed_projection": true}}]}}}},
        {"residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}}, {"linear": {"features": 12}},
            {"activation": {"kind": "GELU_EXACT"}}, {"linear": {"features": 8}}]}}}},
        {"take_token": {"index": 0}}, {"linear": {"features": 3}}]}}})"},
    // Padding flags describe the input tokens; after a class token they are not the
    // attention's own (T + 1 positions) and must not be read (they were, past their end).
    // (The position embedding keeps the zero-initialised token's row off LayerNorm's x = 0
    // singularity, where central differences mislead.)
    {"class_token_after_padded_tokens", R"({"input": {"kind": "TOKENS", "shape": [5], "pad_id": 3},
        "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 10, "features": 8}}, {"class_token": {}},
        {"position_embedding": {}},
        {"residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}}, {"attention": {"num_heads": 2}}]}}}},
        {"take_token": {"index": 0}}, {"linear": {"features": 3}}]}}})"},
    {"transformer_block", R"({"input": {"kind": "TOKENS", "shape": [6], "pad_id": 3},
        "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 10, "features": 8}},
        {"name": "blocks_0", "residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}},
            {"name": "attn", "attention": {"num_heads": 2, "causal": true}}]}}}},
        {"residual": {"body": {"sequential": {"layers": [
            {"rms_norm": {}}, {"linear": {"features": 16}}, {"activation": {"kind": "GELU"}},
            {"dropout": {"rate": 0.25}}, {"linear": {"features": 8}}]}}}},
        {"linear": {"features": 10}}]}}})"},
    {"llama_block", R"({"input": {"kind": "TOKENS", "shape": [7]},
        "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 10, "features": 8}},
        {"residual": {"body": {"sequential": {"layers": [
            {"rms_norm": {"epsilon": 1e-5}},
            {"attention": {"num_heads": 4, "num_kv_heads": 2, "head_dim": 4, "causal": true,
                           "projection_names": "HF", "no_qkv_bias": true, "no_out_bias": true,
                           "rotary": {"theta": 500000, "scaling": "LLAMA3", "factor": 8,
                                      "low_freq_factor": 1, "high_freq_factor": 4,
                                      "original_max_position_embeddings": 16}}}]}}}},
        {"residual": {"body": {"sequential": {"layers": [
            {"rms_norm": {}},
            {"gated_mlp": {"hidden_features": 12, "activation": "SILU"}}]}}}},
        {"rms_norm": {}}, {"linear": {"features": 10, "no_bias": true}}]}}})"},
    {"qwen2_block", R"({"input": {"shape": [5, 6]}, "body": {"sequential": {"layers": [
        {"residual": {"body": {"sequential": {"layers": [
            {"rms_norm": {}},
            {"attention": {"num_heads": 3, "num_kv_heads": 1, "causal": true,
                           "projection_names": "HF", "no_out_bias": true,
                           "rotary": {"scaling": "LINEAR", "factor": 2}}}]}}}},
        {"gated_mlp": {"hidden_features": 5, "activation": "GELU", "bias": true}},
        {"linear": {"features": 3}}]}}, "loss": {"kind": "MSE"}})"},
    // GPT-2: learned positions, packed Conv1D attention, the head tied to the embedding (its
    // gradient is both uses'), padding (id 3) masked as keys and not counted.
    {"gpt2_block", R"({"input": {"kind": "TOKENS", "shape": [6], "pad_id": 3},
        "body": {"sequential": {"layers": [
        {"name": "wte", "embedding": {"num_embeddings": 10, "features": 8}},
        {"position_embedding": {"num_positions": 9}},
        {"residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {"epsilon": 1e-5}},
            {"attention": {"num_heads": 2, "causal": true, "projection_names": "GPT2"}}]}}}},
        {"residual": {"body": {"sequential": {"layers": [
            {"layer_norm": {}}, {"linear": {"features": 12, "conv1d_layout": true}},
            {"activation": {"kind": "GELU"}}, {"linear": {"features": 8}}]}}}},
        {"layer_norm": {}}, {"linear": {"features": 10, "no_bias": true, "tied_to": "wte"}}]}},
        "loss": {"ignore_index": -100, "shift_labels": true}})"},
    // BERT: token-type row 0, post-norm layers, bidirectional attention with padded keys
    // (id 0), pooler and classifier.
    {"bert_layer", R"({"input": {"kind": "TOKENS", "shape": [5], "pad_id": 0},
        "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 10, "features": 8}},
        {"position_embedding": {"num_positions": 7}},
        {"position_embedding": {"num_positions": 2, "row0_only": true}},
        {"layer_norm": {"epsilon": 1e-12}},
        {"residual": {"body": {"attention": {"num_heads": 2, "projection_names": "BERT"}}}},
        {"layer_norm": {"epsilon": 1e-12}},
        {"residual": {"body": {"sequential": {"layers": [
            {"linear": {"features": 10}}, {"activation": {"kind": "GELU_EXACT"}},
            {"linear": {"features": 8}}]}}}},
        {"layer_norm": {"epsilon": 1e-12}}, {"take_token": {}},
        {"linear": {"features": 8}}, {"activation": {"kind": "TANH"}},
        {"linear": {"features": 3}}]}}})"},
};

INSTANTIATE_TEST_SUITE_P(Modules, GradientTest,
                         ::testing::Combine(::testing::ValuesIn(kCases), ::testing::Bool()),
                         [](const auto& info) {
                           return std::string(std::get<0>(info.param).name) +
                                  (std::get<1>(info.param) ? "_reference" : "_onednn");
                         });

}  // namespace
}  // namespace qtrain::engine
