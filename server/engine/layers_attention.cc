// Multi-head self-attention (Flax MultiHeadDotProductAttention): children query / key / value /
// out (Linear, with bias), quantizable einsums einsum0 = q·kᵀ and einsum1 = attention·v.
#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/quant_op.h"

namespace qtrain::engine {
namespace {

// (B, T, H, Dh) ↔ (B, H, T, Dh).
Tensor SplitHeads(const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t dh) {
  Tensor out = Tensor::Empty(DType::kF32, {b * h, t, dh});
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      for (int64_t k = 0; k < h; ++k) {
        std::copy_n(src + ((i * t + j) * h + k) * dh, dh, dst + ((i * h + k) * t + j) * dh);
      }
    }
  }
  return out;
}

Tensor MergeHeads(const Tensor& x, int64_t b, int64_t t, int64_t h, int64_t dh) {
  Tensor out = Tensor::Empty(DType::kF32, {b, t, h * dh});
  const float* src = x.data<float>();
  float* dst = out.data<float>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) {
      for (int64_t k = 0; k < h; ++k) {
        std::copy_n(src + ((i * h + k) * t + j) * dh, dh, dst + ((i * t + j) * h + k) * dh);
      }
    }
  }
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
  Attention(std::string path, int64_t d_model, int64_t heads, int64_t qkv, bool causal,
            int64_t seq_len, uint64_t seed)
      : Module(std::move(path)),
        seq_len_(seq_len),
        d_model_(d_model),
        heads_(heads),
        head_dim_(qkv / heads),
        causal_(causal),
        einsum0_(this->path(), kEinsum, "einsum0", false),
        einsum1_(this->path(), kEinsum, "einsum1", false) {
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
    QTRAIN_ASSIGN_OR_RETURN(Tensor q, query_->Forward(ctx, x));
    QTRAIN_ASSIGN_OR_RETURN(Tensor k, key_->Forward(ctx, x));
    QTRAIN_ASSIGN_OR_RETURN(Tensor v, value_->Forward(ctx, x));
    Tensor qh = SplitHeads(q, b, t, h, dh);
    Scale(qh, 1.0f / std::sqrt(static_cast<float>(dh)));  // Flax scales the query
    Tensor kt = TransposeLast2(SplitHeads(k, b, t, h, dh));
    Tensor vh = SplitHeads(v, b, t, h, dh);
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
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx, query_->Backward(ctx, MergeHeads(g0.dx, b, t, h, dh)));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dxk,
                            key_->Backward(ctx, MergeHeads(TransposeLast2(g0.dw), b, t, h, dh)));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dxv, value_->Backward(ctx, MergeHeads(g1.dw, b, t, h, dh)));
    for (int64_t i = 0; i < dx.numel(); ++i) {
      dx.data<float>()[i] += dxk.data<float>()[i] + dxv.data<float>()[i];
    }
    saved_.reset();
    return dx;
  }

  std::vector<Module*> Children() override {
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

 private:
  static constexpr float kMasked = -1e30f;  // exp underflows to exactly 0
  struct Saved {
    Tensor q, kt, v, attn;
    int64_t b, t;
  };

  int64_t seq_len_, d_model_, heads_, head_dim_;
  bool causal_;
  QuantizedDot einsum0_, einsum1_;
  std::unique_ptr<Module> query_, key_, value_, out_;
  std::optional<Saved> saved_;
};

}  // namespace

std::unique_ptr<Module> MakeAttention(std::string path, int64_t d_model, int64_t num_heads,
                                      int64_t qkv_features, bool causal, int64_t seq_len,
                                      uint64_t seed) {
  return std::make_unique<Attention>(std::move(path), d_model, num_heads, qkv_features, causal,
                                     seq_len, seed);
}

}  // namespace qtrain::engine
