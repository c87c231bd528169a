// Multi-head self-attention (Flax MultiHeadDotProductAttention): children query / key / value /
// out (Linear, with bias), or PyTorch's packed in_proj / out_proj; quantizable einsums
// einsum0 = q·kᵀ and einsum1 = attention·v.
#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/model.h"
#include "server/engine/modules/common.h"
#include "server/engine/quant_op.h"

namespace qtrain::engine {
namespace {

// (B, T, H, Dh) ↔ (B, H, T, Dh). The (B, T, ·) side has rows of `stride` floats, the heads
// starting at column `offset` (a packed q | k | v projection has stride 3·H·Dh).
Tensor SplitHeads(const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t dh, int64_t stride,
                  int64_t offset) {
  Tensor out = Tensor::Empty(DType::kF32, {b * h, t, dh});
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      for (int64_t k = 0; k < h; ++k) {
        std::copy_n(src + (i * t + j) * stride + offset + k * dh, dh,
                    dst + ((i * h + k) * t + j) * dh);
      }
    }
  }
  return out;
}
Tensor SplitHeads(const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t dh) {
  return SplitHeads(x, b, t, h, dh, h * dh, 0);
}

void MergeHeadsInto(const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t dh, float* dst,
                    int64_t stride, int64_t offset) {
  const float* src = x.data<float>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      for (int64_t k = 0; k < h; ++k) {
        std::copy_n(src + ((i * h + k) * t + j) * dh, dh,
                    dst + (i * t + j) * stride + offset + k * dh);
      }
    }
  }
}
Tensor MergeHeads(const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t dh) {
  Tensor out = Tensor::Empty(DType::kF32, {b, t, h * dh});
  MergeHeadsInto(x, b, t, h, dh, out.data<float>(), h * dh, 0);
  return out;
}

// (N, R, C) → (N, C, R).
Tensor TransposeLast2(const Tensor& x) {
  const int64_t n = x.dim(0), r = x.dim(1), c = x.dim(2);
  Tensor out = Tensor::Empty(DType::kF32, {n, c, r});
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < r; ++j) {
      for (int64_t k = 0; k < c; ++k) {
        dst[(i * c + k) * r + j] = src[(i * r + j) * c + k];
      }
    }
  }
  return out;
}

void Scale(Tensor& t, float s) {
  for (float& v : t.span<float>()) {
    v *= s;
  }
}

class Attention final : public Module {
 public:
  Attention(std::string path, int64_t d_model, int64_t heads, int64_t qkv, bool causal, bool packed,
            int64_t seq_len, uint64_t seed)
      : Module(std::move(path)),
        seq_len_(seq_len),
        d_model_(d_model),
        heads_(heads),
        head_dim_(qkv / heads),
        causal_(causal),
        einsum0_(this->path(), kEinsum, "einsum0", false),
        einsum1_(this->path(), kEinsum, "einsum1", false) {
    if (packed) {
      in_proj_ = MakeLinear(ChildPath("in_proj"), d_model, 3 * qkv, true, seed);
      std::vector<Param*> params;
      in_proj_->CollectParams(&params);
      for (Param* p : params) {  // in_proj_weight / in_proj_bias on the attention module
        p->torch_module = this->path();
        p->torch_leaf = p->torch_leaf == "weight" ? "in_proj_weight" : "in_proj_bias";
      }
      out_ = MakeLinear(ChildPath("out_proj"), qkv, d_model, true, seed);
      return;
    }
    query_ = MakeLinear(ChildPath("query"), d_model, qkv, true, seed);
    key_ = MakeLinear(ChildPath("key"), d_model, qkv, true, seed);
    value_ = MakeLinear(ChildPath("value"), d_model, qkv, true, seed);
    out_ = MakeLinear(ChildPath("out"), qkv, d_model, true, seed);
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    if (x.dtype() != DType::kF32 || x.rank() != 3 || x.dim(2) != d_model_) {
      return absl::InvalidArgumentError(absl::StrCat("module \"", path(),
                                                     "\": expected f32 (B, T, ", d_model_,
                                                     "), got ", ShapeString(x.shape())));
    }
    const int64_t b = x.dim(0), t = x.dim(1), h = heads_, dh = head_dim_;
    Tensor qh, kt, vh;
    if (in_proj_) {
      QTRAIN_ASSIGN_OR_RETURN(Tensor qkv, in_proj_->Forward(ctx, x));
      qh = SplitHeads(qkv, b, t, h, dh, 3 * h * dh, 0);
      kt = TransposeLast2(SplitHeads(qkv, b, t, h, dh, 3 * h * dh, h * dh));
      vh = SplitHeads(qkv, b, t, h, dh, 3 * h * dh, 2 * h * dh);
    } else {
      QTRAIN_ASSIGN_OR_RETURN(Tensor q, query_->Forward(ctx, x));
      QTRAIN_ASSIGN_OR_RETURN(Tensor k, key_->Forward(ctx, x));
      QTRAIN_ASSIGN_OR_RETURN(Tensor v, value_->Forward(ctx, x));
      qh = SplitHeads(q, b, t, h, dh);
      kt = TransposeLast2(SplitHeads(k, b, t, h, dh));
      vh = SplitHeads(v, b, t, h, dh);
    }
    Scale(qh, 1.0f / std::sqrt(static_cast<float>(dh)));  // Flax and PyTorch scale the query
    QTRAIN_ASSIGN_OR_RETURN(Tensor scores,
                            einsum0_.Forward(ctx, qh, kt, {b, h, t, dh}, {b, h, dh, t}));
    if (causal_) {
      float* s = scores.data<float>();
      for (int64_t n = 0; n < b * h; ++n) {
        for (int64_t i = 0; i < t; ++i) {
          for (int64_t j = i + 1; j < t; ++j) {
            s[(n * t + i) * t + j] = kMasked;
          }
        }
      }
    }
    Tensor attn = Tensor::Empty(DType::kF32, scores.shape());
    QTRAIN_RETURN_IF_ERROR(
        ctx.backend->SoftmaxFwd(b * h * t, t, false, scores.data<float>(), attn.data<float>()));
    QTRAIN_ASSIGN_OR_RETURN(Tensor ctx_heads,
                            einsum1_.Forward(ctx, attn, vh, {b, h, t, t}, {b, h, t, dh}));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, out_->Forward(ctx, MergeHeads(ctx_heads, b, t, h, dh)));
    if (ctx.training) {
      saved_ = Saved{std::move(qh), std::move(kt), std::move(vh), std::move(attn), b, t};
    } else {
      saved_.reset();
    }
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (!saved_) {
      return NoForwardError(path());
    }
    const int64_t b = saved_->b, t = saved_->t, h = heads_, dh = head_dim_;
    QTRAIN_ASSIGN_OR_RETURN(Tensor d_merged, out_->Backward(ctx, dy));
    Tensor d_ctx = SplitHeads(d_merged, b, t, h, dh);
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients g1,
                            einsum1_.Backward(ctx, saved_->attn, saved_->v, d_ctx));
    Tensor d_scores = Tensor::Empty(DType::kF32, saved_->attn.shape());
    QTRAIN_RETURN_IF_ERROR(ctx.backend->SoftmaxBwd(b * h * t, t, saved_->attn.data<float>(),
                                                   g1.dx.data<float>(), d_scores.data<float>()));
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients g0,
                            einsum0_.Backward(ctx, saved_->q, saved_->kt, d_scores));
    Scale(g0.dx, 1.0f / std::sqrt(static_cast<float>(dh)));
    saved_.reset();
    if (in_proj_) {
      Tensor d_qkv = Tensor::Empty(DType::kF32, {b, t, 3 * h * dh});
      float* d = d_qkv.data<float>();
      MergeHeadsInto(g0.dx, b, t, h, dh, d, 3 * h * dh, 0);
      MergeHeadsInto(TransposeLast2(g0.dw), b, t, h, dh, d, 3 * h * dh, h * dh);
      MergeHeadsInto(g1.dw, b, t, h, dh, d, 3 * h * dh, 2 * h * dh);
      return in_proj_->Backward(ctx, d_qkv);
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx, query_->Backward(ctx, MergeHeads(g0.dx, b, t, h, dh)));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dxk,
                            key_->Backward(ctx, MergeHeads(TransposeLast2(g0.dw), b, t, h, dh)));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dxv, value_->Backward(ctx, MergeHeads(g1.dw, b, t, h, dh)));
    for (int64_t i = 0; i < dx.numel(); ++i) {
      dx.data<float>()[i] += dxk.data<float>()[i] + dxv.data<float>()[i];
    }
    return dx;
  }

  std::vector<Module*> Children() override {
    if (in_proj_) return {in_proj_.get(), out_.get()};
    return {query_.get(), key_.get(), value_.get(), out_.get()};
  }
  absl::Status PlanOps(const CompiledRules* rules) override {
    QTRAIN_RETURN_IF_ERROR(einsum0_.Plan(rules, head_dim_));
    QTRAIN_RETURN_IF_ERROR(einsum1_.Plan(rules, seq_len_));
    return Module::PlanOps(rules);
  }
  void ReportOps(std::vector<std::pair<int, std::string>>* out) override {
    out->emplace_back(einsum0_.rule_index(), path() + ":" + einsum0_.op_id());
    out->emplace_back(einsum1_.rule_index(), path() + ":" + einsum1_.op_id());
    Module::ReportOps(out);
  }

  // Flax's MultiHeadDotProductAttention as Forward computes it: query / key / value / out
  // linear layers, the query scaled by 1/sqrt(head dim), einsum0 = q·kᵀ, the causal mask, the
  // softmax, einsum1 = attention·v; the einsums' operands through QDQ when a rule quantizes
  // them (they are activations: static scales only).
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const int64_t t = seq_len_, h = heads_, dh = head_dim_;
    const std::string& base = path();
    std::string packed;
    if (in_proj_) {
      QTRAIN_ASSIGN_OR_RETURN(packed, in_proj_->ExportOnnx(g, x));
    }
    // Part `index` (q, k, v) as (N, T, H, Dh): its own linear layer, or a slice of the packed one.
    auto project = [&](Module* linear, int64_t index,
                       const char* name) -> absl::StatusOr<std::string> {
      std::string y;
      if (in_proj_) {
        y = g.Op("Slice",
                 {packed, g.Ints("start", {index * h * dh}), g.Ints("end", {(index + 1) * h * dh}),
                  g.Ints("axis", {2})},
                 base + "/" + name);
      } else {
        QTRAIN_ASSIGN_OR_RETURN(y, linear->ExportOnnx(g, x));
      }
      return g.Op("Reshape", {y, g.Ints("heads", {0, 0, h, dh})}, base + "/" + name);
    };
    QTRAIN_ASSIGN_OR_RETURN(std::string q, project(query_.get(), 0, "query"));
    QTRAIN_ASSIGN_OR_RETURN(std::string k, project(key_.get(), 1, "key"));
    QTRAIN_ASSIGN_OR_RETURN(std::string v, project(value_.get(), 2, "value"));
    q = g.Op("Mul",
             {g.Transpose(q, {0, 2, 1, 3}, base + "/q"),
              g.Scalar("query_scale", 1.0f / std::sqrt(static_cast<float>(dh)))},
             base + "/q");
    k = g.Transpose(k, {0, 2, 3, 1}, base + "/kt");
    v = g.Transpose(v, {0, 2, 1, 3}, base + "/v");
    QTRAIN_ASSIGN_OR_RETURN(q, g.QdqActivation(base, einsum0_.op_id(), "einsum0_lhs", q));
    QTRAIN_ASSIGN_OR_RETURN(k, g.QdqActivation(base, einsum0_.op_id(), "einsum0_rhs", k));
    std::string scores = g.Op("MatMul", {q, k}, base + "/scores");
    if (causal_) {
      Tensor mask = Tensor::Zeros(DType::kF32, {t, t});
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = i + 1; j < t; ++j) mask.data<float>()[i * t + j] = kMasked;
      }
      scores = g.Op("Add", {scores, g.Constant(base + "/causal_mask", mask)}, base + "/masked");
    }
    std::string attn =
        g.Op("Softmax", {scores}, base + "/softmax", {OnnxGraph::IntAttr("axis", -1)});
    QTRAIN_ASSIGN_OR_RETURN(attn, g.QdqActivation(base, einsum1_.op_id(), "einsum1_lhs", attn));
    QTRAIN_ASSIGN_OR_RETURN(v, g.QdqActivation(base, einsum1_.op_id(), "einsum1_rhs", v));
    std::string merged =
        g.Transpose(g.Op("MatMul", {attn, v}, base + "/context"), {0, 2, 1, 3}, base + "/merge");
    merged = g.Op("Reshape", {merged, g.Ints("merge", {0, 0, h * dh})}, base + "/merge");
    return out_->ExportOnnx(g, merged);
  }

 private:
  static constexpr float kMasked = -1e30f;  // exp underflows to exactly 0
  struct Saved {
    Tensor q, kt, v, attn;
    int64_t b, t;
  };

  int64_t seq_len_, d_model_, heads_, head_dim_;
  bool causal_;
  QuantizedDot einsum0_, einsum1_;
  std::unique_ptr<Module> query_, key_, value_, out_, in_proj_;  // in_proj_: packed q | k | v
  std::optional<Saved> saved_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildAttention(const proto::Module& m, ModuleSite& site) {
  const auto& a = m.attention();
  const Shape& shape = site.shape();
  if (shape.size() != 2) {
    return site.Bad(absl::StrCat("attention needs (T, D) examples, got ", ShapeString(shape)));
  }
  const int64_t d = shape[1];
  const int64_t qkv = a.qkv_features() ? a.qkv_features() : d;
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("num_heads", a.num_heads()));
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("qkv_features", qkv));
  if (qkv % a.num_heads() != 0) {
    return site.Bad(
        absl::StrCat("qkv_features ", qkv, " is not divisible by num_heads ", a.num_heads()));
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({4, d, qkv}, 3 * qkv + d));
  // The (heads, T, T) attention scores are the largest activation of the block.
  const int64_t t = shape[0];
  if (a.num_heads() * t > kMaxExampleActivation / t) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "module \"", site.path(), "\": attention scores of ", a.num_heads(), " x ", t, " x ", t,
        " per example exceed the limit of ", kMaxExampleActivation, " elements"));
  }
  site.AddActivations(a.num_heads() * t * t);
  return site.Allocate([&] {
    return std::make_unique<Attention>(site.path(), d, a.num_heads(), qkv, a.causal(),
                                       a.packed_projection(), t, site.seed());
  });
}

}  // namespace

extern const ModuleKind kAttentionKind = {proto::Module::kAttention, "attention",
                                          "MultiHeadAttention", FlattenUse::kBreaks,
                                          BuildAttention};

}  // namespace qtrain::engine
