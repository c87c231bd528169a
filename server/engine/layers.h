// Factories of the model's module kinds (architecture.md "Models"). Each returns a module whose
// parameters are initialised like Flax's defaults from (seed, parameter name). Shapes are checked
// by the model builder (model_builder.cc) before these are called; Forward re-checks the input's
// trailing dims and dtype, because batches come from the network.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "kernels/backend/backend.h"
#include "server/engine/module.h"

namespace qtrain::engine {

// y = x · kernel (+ bias) over the last axis; kernel (in, out). Op: dot_general0.
std::unique_ptr<Module> MakeLinear(std::string path, int64_t in, int64_t out, bool bias,
                                   uint64_t seed);
// NHWC convolution, kernel (kh, kw, in, out). Op: conv_general_dilated0.
std::unique_ptr<Module> MakeConv2D(std::string path, const ConvDesc& geometry, bool bias,
                                   uint64_t seed);
std::unique_ptr<Module> MakeActivation(std::string path, EltwiseKind kind);
std::unique_ptr<Module> MakeLayerNorm(std::string path, int64_t features, float epsilon);
std::unique_ptr<Module> MakeRmsNorm(std::string path, int64_t features, float epsilon);
// int32 ids (B, T) → (B, T, features); ids outside [0, num) are InvalidArgument.
std::unique_ptr<Module> MakeEmbedding(std::string path, int64_t num, int64_t features,
                                      uint64_t seed);
std::unique_ptr<Module> MakeFlatten(std::string path);
std::unique_ptr<Module> MakeDropout(std::string path, float rate);
// Window pooling with `geometry` (n, h, w ignored), or global average (N,H,W,C) → (N,C).
std::unique_ptr<Module> MakePool(std::string path, const PoolDesc& geometry, bool global_avg);
std::unique_ptr<Module> MakeSequential(std::string path,
                                       std::vector<std::unique_ptr<Module>> layers);
std::unique_ptr<Module> MakeResidual(std::string path, std::unique_ptr<Module> body);
// Self-attention over (B, T, d_model) with children query/key/value/out. Ops: einsum0 (q·kᵀ),
// einsum1 (attention·v, contracting over the sequence length `seq_len`).
std::unique_ptr<Module> MakeAttention(std::string path, int64_t d_model, int64_t num_heads,
                                      int64_t qkv_features, bool causal, int64_t seq_len,
                                      uint64_t seed);

}  // namespace qtrain::engine
