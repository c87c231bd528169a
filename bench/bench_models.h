// What the training benchmarks share: the MLP and transformer-block specs and random data.
#pragma once

#include <google/protobuf/util/json_util.h>

#include <random>
#include <string>

#include "kernels/tensor.h"
#include "server/engine/config.h"

namespace qtrain::engine::bench {

// MLP 784-1024-1024-10 (batch 256 in the benchmarks).
inline constexpr char kMlp[] = R"({"input": {"shape": [784]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 1024}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 1024}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 10}}]}}})";

// A transformer block: d_model 512, 8 heads, ff 2048 (batch 16 × sequence 128).
inline constexpr char kBlock[] =
    R"({"input": {"shape": [128, 512]}, "body": {"sequential": {"layers": [
    {"name": "attn_block", "residual": {"body": {"sequential": {"layers": [
      {"layer_norm": {}}, {"name": "attn", "attention": {"num_heads": 8}}]}}}},
    {"name": "mlp_block", "residual": {"body": {"sequential": {"layers": [
      {"layer_norm": {}}, {"linear": {"features": 2048}}, {"activation": {"kind": "GELU"}},
      {"linear": {"features": 512}}]}}}}]}}, "loss": {"kind": "MSE"}})";

template <typename M>
M Parse(const std::string& json) {
  M m;
  (void)google::protobuf::util::JsonStringToMessage(json, &m);
  return m;
}

inline Tensor Random(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  Tensor t = Tensor::Empty(DType::kF32, shape);
  for (float& v : t.span<float>()) {
    v = dist(gen);
  }
  return t;
}

}  // namespace qtrain::engine::bench
