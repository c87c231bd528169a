// Multi-head self-attention (Flax MultiHeadDotProductAttention): children query / key / value /
// out (Linear), HF's q_proj / k_proj / v_proj / o_proj, or PyTorch's packed in_proj / out_proj;
// grouped-query attention (fewer key / value heads) and rotary position embeddings; quantizable
// einsums einsum0 = q·kᵀ and einsum1 = attention·v.
#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/model.h"
#include "server/engine/modules/common.h"
#include "server/engine/modules/rotary_table.h"
#include "server/engine/quant_op.h"

namespace qtrain::engine {
namespace {

// (B, T, H, Dh) ↔ (B, H, T, Dh). The (B, T, ·) side has rows of `stride` floats, the heads
// starting at column `offset` (a packed q | k | v projection has stride 3·H·Dh).
CopyDesc HeadsDesc(int64_t b, int64_t t, int64_t h, int64_t dh, int64_t stride, int64_t offset,
                   bool split) {
  CopyDesc d;
  d.count = {b, t, h};
  d.block = dh;
  const std::array<int64_t, 3> rows = {t * stride, stride, dh}, heads = {h * t * dh, dh, t * dh};
  d.src_stride = split ? rows : heads;
  d.dst_stride = split ? heads : rows;
  (split ? d.src_offset : d.dst_offset) = offset;
  return d;
}
absl::StatusOr<Tensor> SplitHeads(Backend& backend, const Tensor& x, int64_t b, int64_t t,
                                  int64_t h, int64_t dh, int64_t stride, int64_t offset) {
  return backend.Gathered(HeadsDesc(b, t, h, dh, stride, offset, true), x, {b * h, t, dh});
}
absl::StatusOr<Tensor> SplitHeads(Backend& backend, const Tensor& x, int64_t b, int64_t t,
                                  int64_t h, int64_t dh) {
  return SplitHeads(backend, x, b, t, h, dh, h * dh, 0);
}
absl::StatusOr<Tensor> MergeHeads(Backend& backend, const Tensor& x, int64_t b, int64_t t,
                                  int64_t h, int64_t dh) {
  return backend.Gathered(HeadsDesc(b, t, h, dh, h * dh, 0, false), x, {b, t, h * dh});
}

// (B·KV, T, Dh) → (B·H, T, Dh): query head k reads key / value head k / group (HF's repeat_kv).
absl::StatusOr<Tensor> RepeatKv(Backend& backend, const Tensor& x, int64_t b, int64_t kv,
                                int64_t group) {
  const int64_t block = x.numel() / (b * kv);  // T·Dh
  CopyDesc d;
  d.count = {b * kv, group, 1};
  d.src_stride = {block, 0, 0};
  d.dst_stride = {group * block, block, 0};
  d.block = block;
  return backend.Gathered(d, x, {b * kv * group, x.dim(1), x.dim(2)});
}

// The backward of RepeatKv: each key / value head's gradient is the sum over its group.
absl::StatusOr<Tensor> SumKv(Backend& backend, const Tensor& dx, int64_t b, int64_t kv,
                             int64_t group) {
  const int64_t block = dx.numel() / (b * kv * group);
  CopyDesc d;
  d.count = {b * kv, group, 1};
  d.src_stride = {group * block, block, 0};
  d.dst_stride = {block, 0, 0};
  d.block = block;
  d.accumulate = true;
  return backend.Gathered(d, dx, {b * kv, dx.dim(1), dx.dim(2)}, /*zero=*/true);
}

// Options of the attention module beyond its sizes.
struct AttentionOptions {
  bool causal = false;
  bool packed = false;  // PyTorch's in_proj / out_proj
  proto::MultiHeadAttention::ProjectionNames names = proto::MultiHeadAttention::FLAX;
  bool qkv_bias = true, out_bias = true;
  std::optional<RotaryTable> rotary;
};

class Attention final : public Module {
 public:
  Attention(std::string path, int64_t d_model, int64_t heads, int64_t kv_heads, int64_t head_dim,
            AttentionOptions options, int64_t seq_len, uint64_t seed)
      : Module(std::move(path)),
        seq_len_(seq_len),
        d_model_(d_model),
        heads_(heads),
        kv_heads_(kv_heads),
        head_dim_(head_dim),
        causal_(options.causal),
        gpt2_(options.names == proto::MultiHeadAttention::GPT2),
        rotary_(std::move(options.rotary)),
        einsum0_(this->path(), kEinsum, "einsum0", false),
        einsum1_(this->path(), kEinsum, "einsum1", false) {
    const int64_t q_width = heads * head_dim, kv_width = kv_heads * head_dim;
    if (options.names == proto::MultiHeadAttention::GPT2) {  // Conv1D c_attn (q | k | v), c_proj
      in_proj_ = MakeLinear(ChildPath("c_attn"), d_model, 3 * q_width, options.qkv_bias, seed);
      out_ = MakeLinear(ChildPath("c_proj"), q_width, d_model, options.out_bias, seed);
      UseConv1dLayout(*in_proj_);
      UseConv1dLayout(*out_);
      return;
    }
    if (options.packed) {
      in_proj_ = MakeLinear(ChildPath("in_proj"), d_model, 3 * q_width, options.qkv_bias, seed);
      std::vector<Param*> params;
      in_proj_->CollectParams(&params);
      for (Param* p : params) {  // in_proj_weight / in_proj_bias on the attention module
        p->torch_module = this->path();
        p->torch_leaf = p->torch_leaf == "weight" ? "in_proj_weight" : "in_proj_bias";
      }
      out_ = MakeLinear(ChildPath("out_proj"), q_width, d_model, options.out_bias, seed);
      return;
    }
    static const char* const kNames[][4] = {
        {"query", "key", "value", "out"},
        {"q_proj", "k_proj", "v_proj", "o_proj"},
        {},
        {"self/query", "self/key", "self/value", "output/dense"}};
    const char* const* n = kNames[options.names];
    query_ = MakeLinear(ChildPath(n[0]), d_model, q_width, options.qkv_bias, seed);
    key_ = MakeLinear(ChildPath(n[1]), d_model, kv_width, options.qkv_bias, seed);
    value_ = MakeLinear(ChildPath(n[2]), d_model, kv_width, options.qkv_bias, seed);
    out_ = MakeLinear(ChildPath(n[3]), q_width, d_model, options.out_bias, seed);
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    if (x.dtype() != DType::kF32 || x.rank() != 3 || x.dim(2) != d_model_) {
      return absl::InvalidArgumentError(absl::StrCat("module \"", path(),
                                                     "\": expected f32 (B, T, ", d_model_,
                                                     "), got ", ShapeString(x.shape())));
    }
    const int64_t b = x.dim(0), t = x.dim(1), h = heads_, kv = kv_heads_, dh = head_dim_;
    Backend& be = *ctx.backend;
    Tensor qh, kh, vh;
    if (in_proj_) {
      QTRAIN_ASSIGN_OR_RETURN(Tensor qkv, in_proj_->Forward(ctx, x));
      QTRAIN_ASSIGN_OR_RETURN(qh, SplitHeads(be, qkv, b, t, h, dh, 3 * h * dh, 0));
      QTRAIN_ASSIGN_OR_RETURN(kh, SplitHeads(be, qkv, b, t, h, dh, 3 * h * dh, h * dh));
      QTRAIN_ASSIGN_OR_RETURN(vh, SplitHeads(be, qkv, b, t, h, dh, 3 * h * dh, 2 * h * dh));
    } else {
      QTRAIN_ASSIGN_OR_RETURN(Tensor q, query_->Forward(ctx, x));
      QTRAIN_ASSIGN_OR_RETURN(Tensor k, key_->Forward(ctx, x));
      QTRAIN_ASSIGN_OR_RETURN(Tensor v, value_->Forward(ctx, x));
      QTRAIN_ASSIGN_OR_RETURN(qh, SplitHeads(be, q, b, t, h, dh));
      QTRAIN_ASSIGN_OR_RETURN(kh, SplitHeads(be, k, b, t, kv, dh));
      QTRAIN_ASSIGN_OR_RETURN(vh, SplitHeads(be, v, b, t, kv, dh));
    }
    if (rotary_) {
      QTRAIN_ASSIGN_OR_RETURN(qh, Rotate(ctx, qh, false));
      QTRAIN_ASSIGN_OR_RETURN(kh, Rotate(ctx, kh, false));
    }
    if (kv != h) {
      QTRAIN_ASSIGN_OR_RETURN(kh, RepeatKv(be, kh, b, kv, h / kv));
      QTRAIN_ASSIGN_OR_RETURN(vh, RepeatKv(be, vh, b, kv, h / kv));
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor kt, be.Transposed(kh));
    // Flax and PyTorch scale the query.
    QTRAIN_RETURN_IF_ERROR(be.Scale(qh, 1.0f / std::sqrt(static_cast<float>(dh))));
    QTRAIN_ASSIGN_OR_RETURN(Tensor scores,
                            einsum0_.Forward(ctx, qh, kt, {b, h, t, dh}, {b, h, dh, t}));
    QTRAIN_RETURN_IF_ERROR(Mask(ctx, b, t, kMasked, scores));
    QTRAIN_ASSIGN_OR_RETURN(Tensor attn, be.Softmax(scores));
    QTRAIN_ASSIGN_OR_RETURN(Tensor ctx_heads,
                            einsum1_.Forward(ctx, attn, vh, {b, h, t, t}, {b, h, t, dh}));
    QTRAIN_ASSIGN_OR_RETURN(Tensor merged, MergeHeads(be, ctx_heads, b, t, h, dh));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, out_->Forward(ctx, merged));
    if (ctx.training) {
      saved_ = Saved{std::move(qh), std::move(kt), std::move(vh), std::move(attn), b, t};
    } else {
      saved_.reset();
    }
    return y;
  }

  // Sets the scores (b, heads, t, t) a query may not see to `value`: future keys when causal,
  // padded keys always.
  // The padding flags are the input tokens' (b·(t − prefix) of them); the tokens a class token
  // module prepended since (ctx.padding_prefix) are never padding. Flags of another length
  // (a sequence reshaped by other modules) describe other positions and are not used.
  absl::Status Mask(const StepContext& ctx, int64_t b, int64_t t, float value,
                    Tensor& scores) const {
    const int64_t prefix = std::min(ctx.padding_prefix, t);
    const Tensor* padding =
        ctx.padding != nullptr && ctx.padding->numel() == b * (t - prefix) ? ctx.padding : nullptr;
    return ctx.backend->MaskScores(AttentionMaskDesc{b, heads_, t, causal_, prefix}, padding, value,
                                   scores);
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (!saved_) {
      return NoForwardError(path());
    }
    const int64_t b = saved_->b, t = saved_->t, h = heads_, dh = head_dim_;
    Backend& be = *ctx.backend;
    QTRAIN_ASSIGN_OR_RETURN(Tensor d_merged, out_->Backward(ctx, dy));
    QTRAIN_ASSIGN_OR_RETURN(Tensor d_ctx, SplitHeads(be, d_merged, b, t, h, dh));
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients g1,
                            einsum1_.Backward(ctx, saved_->attn, saved_->v, d_ctx));
    QTRAIN_ASSIGN_OR_RETURN(Tensor d_scores, be.SoftmaxGrad(saved_->attn, g1.dx));
    // Masked scores are constants. A padded query whose keys are all masked attends uniformly
    // (as Hugging Face's eager attention does) and must send no gradient through them.
    QTRAIN_RETURN_IF_ERROR(Mask(ctx, b, t, 0.0f, d_scores));
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients g0,
                            einsum0_.Backward(ctx, saved_->q, saved_->kt, d_scores));
    QTRAIN_RETURN_IF_ERROR(be.Scale(g0.dx, 1.0f / std::sqrt(static_cast<float>(dh))));
    saved_.reset();
    QTRAIN_ASSIGN_OR_RETURN(Tensor dk, be.Transposed(g0.dw));
    Tensor dq = std::move(g0.dx), dv = std::move(g1.dw);
    const int64_t kv = kv_heads_;
    if (kv != h) {
      QTRAIN_ASSIGN_OR_RETURN(dk, SumKv(*ctx.backend, dk, b, kv, h / kv));
      QTRAIN_ASSIGN_OR_RETURN(dv, SumKv(*ctx.backend, dv, b, kv, h / kv));
    }
    if (rotary_) {
      QTRAIN_ASSIGN_OR_RETURN(dq, Rotate(ctx, dq, true));
      QTRAIN_ASSIGN_OR_RETURN(dk, Rotate(ctx, dk, true));
    }
    if (in_proj_) {
      QTRAIN_ASSIGN_OR_RETURN(Tensor d_qkv, be.Allocate(DType::kF32, {b, t, 3 * h * dh}));
      const Tensor* parts[] = {&dq, &dk, &dv};
      for (int64_t i = 0; i < 3; ++i) {
        QTRAIN_RETURN_IF_ERROR(be.CopyBlocks(
            HeadsDesc(b, t, h, dh, 3 * h * dh, i * h * dh, /*split=*/false), *parts[i], d_qkv));
      }
      return in_proj_->Backward(ctx, d_qkv);
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor mq, MergeHeads(be, dq, b, t, h, dh));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx, query_->Backward(ctx, mq));
    QTRAIN_ASSIGN_OR_RETURN(Tensor mk, MergeHeads(be, dk, b, t, kv, dh));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dxk, key_->Backward(ctx, mk));
    QTRAIN_ASSIGN_OR_RETURN(Tensor mv, MergeHeads(be, dv, b, t, kv, dh));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dxv, value_->Backward(ctx, mv));
    if (dx.empty()) {
      return dx;
    }
    QTRAIN_RETURN_IF_ERROR(be.AddInto(dx, dxk));
    QTRAIN_RETURN_IF_ERROR(be.AddInto(dx, dxv));
    return dx;
  }

  // transformers' LlamaRotaryEmbedding kept inv_freq in older checkpoints.
  // GPT-2's attention kept its causal mask and masked_bias as buffers.
  void CollectTorchBuffers(std::vector<std::string>* out) override {
    if (rotary_) out->push_back(path() + "/rotary_emb/inv_freq");
    if (gpt2_) {
      out->push_back(path() + "/bias");
      out->push_back(path() + "/masked_bias");
    }
    Module::CollectTorchBuffers(out);
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
    if (rotary_ || kv_heads_ != heads_) {
      return absl::UnimplementedError(absl::StrCat(
          "module \"", path(),
          "\": attention with rotary embeddings or grouped key / value heads has no ONNX form "
          "in this version of qtrain (export compressed-tensors instead)"));
    }
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
      std::vector<float> mask(static_cast<size_t>(t * t), 0.0f);  // a graph constant
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = i + 1; j < t; ++j) mask[i * t + j] = kMasked;
      }
      scores =
          g.Op("Add", {scores, g.Constant(base + "/causal_mask", Tensor::FromFloats({t, t}, mask))},
               base + "/masked");
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

  // x (B·heads, T, Dh) rotated by the position of each row (its inverse for gradients).
  absl::StatusOr<Tensor> Rotate(StepContext& ctx, const Tensor& x, bool inverse) {
    if (rotary_->cos.device() != ctx.backend->device()) {  // built on the host: moved once
      QTRAIN_ASSIGN_OR_RETURN(rotary_->cos, ctx.backend->ToDevice(rotary_->cos));
      QTRAIN_ASSIGN_OR_RETURN(rotary_->sin, ctx.backend->ToDevice(rotary_->sin));
    }
    return ctx.backend->Rotate(rotary_->cos, rotary_->sin, x, head_dim_, inverse);
  }

  int64_t seq_len_, d_model_, heads_, kv_heads_, head_dim_;
  bool causal_, gpt2_;
  std::optional<RotaryTable> rotary_;
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
  const int64_t d = shape[1], t = shape[0];
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("num_heads", a.num_heads()));
  const int64_t heads = a.num_heads();
  int64_t head_dim = 0;
  if (a.head_dim() != 0) {
    QTRAIN_RETURN_IF_ERROR(site.CheckSize("head_dim", a.head_dim()));
    head_dim = a.head_dim();
    if (a.qkv_features() != 0 && a.qkv_features() != heads * head_dim) {
      return site.Bad(absl::StrCat("qkv_features ", a.qkv_features(), " differs from num_heads ",
                                   heads, " x head_dim ", head_dim));
    }
  } else {
    const int64_t qkv = a.qkv_features() ? a.qkv_features() : d;
    QTRAIN_RETURN_IF_ERROR(site.CheckSize("qkv_features", qkv));
    if (qkv % heads != 0) {
      return site.Bad(absl::StrCat("qkv_features ", qkv, " is not divisible by num_heads ", heads));
    }
    head_dim = qkv / heads;
  }
  const int64_t kv = a.num_kv_heads() ? a.num_kv_heads() : heads;
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("num_kv_heads", kv));
  if (heads % kv != 0) {
    return site.Bad(absl::StrCat("num_heads ", heads, " is not a multiple of num_kv_heads ", kv));
  }
  if (a.packed_projection() &&
      (kv != heads || a.projection_names() != proto::MultiHeadAttention::FLAX)) {
    return site.Bad("packed_projection takes neither num_kv_heads nor projection_names");
  }
  if (!proto::MultiHeadAttention::ProjectionNames_IsValid(a.projection_names())) {
    return site.Bad(absl::StrCat("unknown projection_names ", a.projection_names(),
                                 " (FLAX = 0, HF = 1, GPT2 = 2, BERT = 3)"));
  }
  if (a.projection_names() == proto::MultiHeadAttention::GPT2 && kv != heads) {
    return site.Bad("projection_names GPT2 (one packed c_attn) takes no num_kv_heads");
  }
  AttentionOptions options;
  options.causal = a.causal();
  options.packed = a.packed_projection();
  options.names = a.projection_names();
  options.qkv_bias = !a.no_qkv_bias();
  options.out_bias = !a.no_out_bias();
  const int64_t q_width = heads * head_dim, kv_width = kv * head_dim;
  QTRAIN_RETURN_IF_ERROR(site.AddParameters(
      {d, 2 * q_width + 2 * kv_width},
      (options.qkv_bias ? q_width + 2 * kv_width : 0) + (options.out_bias ? d : 0)));
  // The (heads, T, T) attention scores are the largest activation of the block.
  if (heads * t > kMaxExampleActivation / t) {
    return absl::ResourceExhaustedError(
        absl::StrCat("module \"", site.path(), "\": attention scores of ", heads, " x ", t, " x ",
                     t, " per example exceed the limit of ", kMaxExampleActivation, " elements"));
  }
  site.AddActivations(heads * t * t);
  // After the size limits: the table is (T, head_dim / 2).
  if (a.has_rotary()) {
    QTRAIN_ASSIGN_OR_RETURN(RotaryTable table,
                            MakeRotaryTable(site.path(), a.rotary(), t, head_dim));
    options.rotary = std::move(table);
  }
  return site.Allocate([&] {
    return std::make_unique<Attention>(site.path(), d, heads, kv, head_dim, std::move(options), t,
                                       site.seed());
  });
}

}  // namespace

extern const ModuleKind kAttentionKind = {proto::Module::kAttention, "attention",
                                          "MultiHeadAttention", FlattenUse::kBreaks,
                                          BuildAttention};

}  // namespace qtrain::engine
