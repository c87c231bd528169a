// Backend's tensor-level ops: shape, dtype and device checks, output allocation, then the
// descriptor-level op: the engine reaches tensor memory only through these.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/backend/backend.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

float* F(Tensor& t) { return static_cast<float*>(t.raw()); }
const float* F(const Tensor& t) { return static_cast<const float*>(t.raw()); }

absl::Status Mismatch(const char* op, const Tensor& a, const Tensor& b) {
  return absl::InvalidArgumentError(absl::StrCat(op, ": ", DTypeName(a.dtype()),
                                                 ShapeString(a.shape()), " and ",
                                                 DTypeName(b.dtype()), ShapeString(b.shape())));
}

absl::Status Expect(const char* op, const Tensor& t, DType want, const Device& device) {
  if (t.dtype() == want && t.device() == device) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(op, ": expected ", DTypeName(want), " on ", device.Name(), ", got ",
                   DTypeName(t.dtype()), ShapeString(t.shape()), " on ", t.device().Name()));
}

// A new tensor a ∘ b.
absl::StatusOr<Tensor> Elementwise(Backend& be, BinaryKind kind, const char* op, const Tensor& a,
                                   const Tensor& b) {
  QTRAIN_RETURN_IF_ERROR(Expect(op, a, DType::kF32, be.device()));
  QTRAIN_RETURN_IF_ERROR(Expect(op, b, DType::kF32, be.device()));
  if (a.numel() != b.numel()) return Mismatch(op, a, b);
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, be.Allocate(DType::kF32, a.shape()));
  QTRAIN_RETURN_IF_ERROR(be.Binary(kind, a.numel(), F(a), F(b), F(y)));
  return y;
}

}  // namespace

// Each tensor is of `dtype` and on this backend's device.
#define QTRAIN_CHECK_TENSOR(op, t, want) QTRAIN_RETURN_IF_ERROR(Expect(op, t, want, device()))
#define QTRAIN_CHECK_F32(op, t) QTRAIN_CHECK_TENSOR(op, t, DType::kF32)

absl::StatusOr<Tensor> Backend::Zeros(const Shape& shape) {
  QTRAIN_ASSIGN_OR_RETURN(Tensor t, Allocate(DType::kF32, shape));
  QTRAIN_RETURN_IF_ERROR(Fill(t.numel(), 0.0f, F(t)));
  return t;
}

absl::StatusOr<Tensor> Backend::Clone(const Tensor& x) {
  CopyDesc d;
  d.block = x.numel();
  return Gathered(d, x, x.shape());
}

absl::StatusOr<Tensor> Backend::Activation(EltwiseKind kind, const Tensor& x) {
  QTRAIN_CHECK_F32("activation", x);
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, x.shape()));
  QTRAIN_RETURN_IF_ERROR(EltwiseFwd(kind, x.numel(), F(x), F(y)));
  return y;
}

absl::StatusOr<Tensor> Backend::ActivationGrad(EltwiseKind kind, const Tensor& x,
                                               const Tensor& dy) {
  QTRAIN_CHECK_F32("activation gradient", x);
  QTRAIN_CHECK_F32("activation gradient", dy);
  if (x.numel() != dy.numel()) return Mismatch("activation gradient", x, dy);
  QTRAIN_ASSIGN_OR_RETURN(Tensor dx, Allocate(DType::kF32, dy.shape()));
  QTRAIN_RETURN_IF_ERROR(EltwiseBwd(kind, x.numel(), F(x), F(dy), F(dx)));
  return dx;
}

namespace {
absl::Status CheckSameSize(const char* op, const Tensor& a, const Tensor& b) {
  if (a.numel() != b.numel()) return Mismatch(op, a, b);
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<Tensor> Backend::Add(const Tensor& a, const Tensor& b) {
  return Elementwise(*this, BinaryKind::kAdd, "add", a, b);
}

absl::StatusOr<Tensor> Backend::Mul(const Tensor& a, const Tensor& b) {
  return Elementwise(*this, BinaryKind::kMul, "multiply", a, b);
}

absl::Status Backend::AddInto(Tensor& acc, const Tensor& b) {
  QTRAIN_CHECK_F32("add", acc);
  QTRAIN_CHECK_F32("add", b);
  QTRAIN_RETURN_IF_ERROR(CheckSameSize("add", acc, b));
  return Binary(BinaryKind::kAdd, acc.numel(), F(acc), F(b), F(acc));
}

absl::Status Backend::MulInto(Tensor& acc, const Tensor& b) {
  QTRAIN_CHECK_F32("multiply", acc);
  QTRAIN_CHECK_F32("multiply", b);
  QTRAIN_RETURN_IF_ERROR(CheckSameSize("multiply", acc, b));
  return Binary(BinaryKind::kMul, acc.numel(), F(acc), F(b), F(acc));
}

absl::Status Backend::Scale(Tensor& t, float s) {
  QTRAIN_CHECK_F32("scale", t);
  return Axpby(t.numel(), 0.0f, nullptr, s, F(t));
}

absl::Status Backend::Axpby(float alpha, const Tensor& x, float beta, Tensor& y) {
  QTRAIN_CHECK_F32("axpby", x);
  QTRAIN_CHECK_F32("axpby", y);
  QTRAIN_RETURN_IF_ERROR(CheckSameSize("axpby", x, y));
  return Axpby(y.numel(), alpha, F(x), beta, F(y));
}

absl::Status Backend::Fill(Tensor& t, float value) {
  QTRAIN_CHECK_F32("fill", t);
  return Fill(t.numel(), value, F(t));
}

namespace {
// (rows, n) views of y and the first n values of v.
absl::Status CheckBias(const char* op, const Tensor& y, const Tensor& v, int64_t n) {
  if (n <= 0 || n > v.numel() || y.numel() % n != 0) {
    return absl::InvalidArgumentError(absl::StrCat(op, ": ", n, " values of ",
                                                   ShapeString(v.shape()), " per row of ",
                                                   ShapeString(y.shape())));
  }
  return absl::OkStatus();
}
}  // namespace

absl::Status Backend::AddBias(Tensor& y, const Tensor& bias, int64_t n) {
  QTRAIN_CHECK_F32("bias", y);
  QTRAIN_CHECK_F32("bias", bias);
  QTRAIN_RETURN_IF_ERROR(CheckBias("bias", y, bias, n));
  return BroadcastRows(RowsDesc{1, y.numel() / n, n, 1.0f, true}, F(bias), F(y));
}

absl::Status Backend::AccumulateBiasGrad(const Tensor& dy, Tensor& grad, int64_t n) {
  QTRAIN_CHECK_F32("bias gradient", dy);
  QTRAIN_CHECK_F32("bias gradient", grad);
  QTRAIN_RETURN_IF_ERROR(CheckBias("bias gradient", dy, grad, n));
  return ReduceRows(RowsDesc{1, dy.numel() / n, n, 1.0f, true}, F(dy), F(grad));
}

absl::StatusOr<Tensor> Backend::MeanOverRows(const Tensor& x, int64_t batch, int64_t rows) {
  QTRAIN_CHECK_F32("mean over rows", x);
  if (batch <= 0 || rows <= 0 || x.numel() % (batch * rows) != 0) {
    return absl::InvalidArgumentError(absl::StrCat("mean over rows: ", ShapeString(x.shape()),
                                                   " is not ", batch, " x ", rows, " rows"));
  }
  const int64_t cols = x.numel() / (batch * rows);
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, {batch, cols}));
  QTRAIN_RETURN_IF_ERROR(
      ReduceRows(RowsDesc{batch, rows, cols, static_cast<float>(rows), false}, F(x), F(y)));
  return y;
}

absl::StatusOr<Tensor> Backend::MeanOverRowsGrad(const Tensor& dy, int64_t rows, Shape x_shape) {
  QTRAIN_CHECK_F32("mean over rows gradient", dy);
  if (dy.rank() != 2 || rows <= 0 || NumElements(x_shape) != dy.numel() * rows) {
    return absl::InvalidArgumentError(
        absl::StrCat("mean over rows gradient: ", ShapeString(dy.shape()), " spread over ", rows,
                     " rows is not ", ShapeString(x_shape)));
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor dx, Allocate(DType::kF32, std::move(x_shape)));
  QTRAIN_RETURN_IF_ERROR(BroadcastRows(
      RowsDesc{dy.dim(0), rows, dy.dim(1), static_cast<float>(rows), false}, F(dy), F(dx)));
  return dx;
}

absl::Status Backend::CopyBlocks(const CopyDesc& d, const Tensor& src, Tensor& dst) {
  QTRAIN_CHECK_F32("copy", src);
  QTRAIN_CHECK_F32("copy", dst);
  int64_t src_end = 0, dst_end = 0;
  QTRAIN_RETURN_IF_ERROR(ValidateCopyDesc(d, &src_end, &dst_end));
  if (src_end > src.numel() || dst_end > dst.numel()) {
    return absl::InvalidArgumentError(absl::StrCat("copy reaches float ", src_end, " of src ",
                                                   ShapeString(src.shape()), " and ", dst_end,
                                                   " of dst ", ShapeString(dst.shape())));
  }
  return Copy(d, F(src), F(dst));
}

absl::StatusOr<Tensor> Backend::Gathered(const CopyDesc& d, const Tensor& src, Shape shape,
                                         bool zero) {
  QTRAIN_ASSIGN_OR_RETURN(Tensor dst, zero ? Zeros(shape) : Allocate(DType::kF32, shape));
  QTRAIN_RETURN_IF_ERROR(CopyBlocks(d, src, dst));
  return dst;
}

absl::StatusOr<Tensor> Backend::Transposed(const Tensor& x) {
  QTRAIN_CHECK_F32("transpose", x);
  if (x.rank() == 2) {
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, {x.dim(1), x.dim(0)}));
    QTRAIN_RETURN_IF_ERROR(Transpose(x.dim(0), x.dim(1), F(x), F(y)));
    return y;
  }
  if (x.rank() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("transpose: expected 2 or 3 axes, got ", ShapeString(x.shape())));
  }
  const int64_t n = x.dim(0), r = x.dim(1), c = x.dim(2);
  CopyDesc d;  // element (i, j, k) → (i, k, j)
  d.count = {n, r, c};
  d.src_stride = {r * c, c, 1};
  d.dst_stride = {r * c, 1, r};
  d.block = 1;
  return Gathered(d, x, {n, c, r});
}

absl::StatusOr<Tensor> Backend::Softmax(const Tensor& x, bool log) {
  QTRAIN_CHECK_F32("softmax", x);
  if (x.rank() < 1 || x.dim(x.rank() - 1) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("softmax: expected a non-empty last axis, got ", ShapeString(x.shape())));
  }
  const int64_t cols = x.dim(x.rank() - 1);
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, x.shape()));
  QTRAIN_RETURN_IF_ERROR(SoftmaxFwd(x.numel() / cols, cols, log, F(x), F(y)));
  return y;
}

absl::StatusOr<Tensor> Backend::SoftmaxGrad(const Tensor& y, const Tensor& dy) {
  QTRAIN_CHECK_F32("softmax gradient", y);
  QTRAIN_CHECK_F32("softmax gradient", dy);
  if (y.shape() != dy.shape() || y.rank() < 1 || y.dim(y.rank() - 1) <= 0) {
    return Mismatch("softmax gradient", y, dy);
  }
  const int64_t cols = y.dim(y.rank() - 1);
  QTRAIN_ASSIGN_OR_RETURN(Tensor dx, Allocate(DType::kF32, y.shape()));
  QTRAIN_RETURN_IF_ERROR(SoftmaxBwd(y.numel() / cols, cols, F(y), F(dy), F(dx)));
  return dx;
}

absl::StatusOr<Tensor> Backend::Rotate(const Tensor& cos, const Tensor& sin, const Tensor& x,
                                       int64_t dim, bool inverse) {
  QTRAIN_CHECK_F32("rotary", cos);
  QTRAIN_CHECK_F32("rotary", sin);
  QTRAIN_CHECK_F32("rotary", x);
  if (x.rank() < 2 || dim <= 0 || x.numel() % dim != 0 || cos.shape() != sin.shape() ||
      cos.numel() < x.dim(1) * (dim / 2)) {
    return absl::InvalidArgumentError(absl::StrCat("rotary: x ", ShapeString(x.shape()), " dim ",
                                                   dim, " tables ", ShapeString(cos.shape())));
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, x.shape()));
  QTRAIN_RETURN_IF_ERROR(
      Rotary(RotaryDesc{x.numel() / dim, x.dim(1), dim, inverse}, F(cos), F(sin), F(x), F(y)));
  return y;
}

absl::StatusOr<Tensor> Backend::Pool(const PoolDesc& d, const Tensor& x) {
  QTRAIN_CHECK_F32("pooling", x);
  QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
  if (x.numel() != d.n * d.h * d.w * d.c) {
    return absl::InvalidArgumentError(absl::StrCat("pooling: src ", ShapeString(x.shape()),
                                                   " is not (", d.n, ", ", d.h, ", ", d.w, ", ",
                                                   d.c, ")"));
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, {d.n, d.out_h(), d.out_w(), d.c}));
  QTRAIN_RETURN_IF_ERROR(PoolFwd(d, F(x), F(y)));
  return y;
}

absl::StatusOr<Tensor> Backend::PoolGrad(const PoolDesc& d, const Tensor& x, const Tensor& dy) {
  QTRAIN_CHECK_F32("pooling gradient", x);
  QTRAIN_CHECK_F32("pooling gradient", dy);
  QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
  if (x.numel() != d.n * d.h * d.w * d.c || dy.numel() != d.n * d.out_h() * d.out_w() * d.c) {
    return Mismatch("pooling gradient", x, dy);
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor dx, Allocate(DType::kF32, x.shape()));
  QTRAIN_RETURN_IF_ERROR(PoolBwd(d, F(x), F(dy), F(dx)));
  return dx;
}

namespace {
// x's rows of gamma.numel() features; 0 when x is not made of them.
int64_t NormRows(const Tensor& x, const Tensor& gamma) {
  const int64_t cols = gamma.numel();
  if (x.rank() < 1 || cols <= 0 || x.dim(x.rank() - 1) != cols) return 0;
  return x.numel() / cols;
}
absl::Status BadNorm(const char* op, const Tensor& x, const Tensor& gamma) {
  return absl::InvalidArgumentError(absl::StrCat(
      op, ": input ", ShapeString(x.shape()), " against parameters ", ShapeString(gamma.shape())));
}
}  // namespace

absl::StatusOr<Tensor> Backend::LayerNorm(float eps, const Tensor& x, const Tensor& gamma,
                                          const Tensor& beta, NormSaved& saved) {
  QTRAIN_CHECK_F32("layer norm", x);
  QTRAIN_CHECK_F32("layer norm", gamma);
  QTRAIN_CHECK_F32("layer norm", beta);
  const int64_t rows = NormRows(x, gamma);
  if (rows == 0 || beta.numel() != gamma.numel()) return BadNorm("layer norm", x, gamma);
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, x.shape()));
  QTRAIN_ASSIGN_OR_RETURN(saved.mean, Allocate(DType::kF32, {rows}));
  QTRAIN_ASSIGN_OR_RETURN(saved.var, Allocate(DType::kF32, {rows}));
  QTRAIN_RETURN_IF_ERROR(LayerNormFwd(rows, gamma.numel(), eps, F(x), F(gamma), F(beta), F(y),
                                      F(saved.mean), F(saved.var)));
  return y;
}

absl::StatusOr<Tensor> Backend::RmsNorm(float eps, const Tensor& x, const Tensor& gamma,
                                        NormSaved& saved) {
  QTRAIN_CHECK_F32("RMS norm", x);
  QTRAIN_CHECK_F32("RMS norm", gamma);
  const int64_t rows = NormRows(x, gamma);
  if (rows == 0) return BadNorm("RMS norm", x, gamma);
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, x.shape()));
  QTRAIN_ASSIGN_OR_RETURN(saved.rstd, Allocate(DType::kF32, {rows}));
  QTRAIN_RETURN_IF_ERROR(RmsNormFwd(rows, gamma.numel(), eps, F(x), F(gamma), F(y), F(saved.rstd)));
  return y;
}

absl::StatusOr<Tensor> Backend::BatchNorm(float eps, bool batch_stats, const Tensor& x,
                                          const Tensor& gamma, const Tensor& beta,
                                          NormSaved& saved) {
  QTRAIN_CHECK_F32("batch norm", x);
  QTRAIN_CHECK_F32("batch norm", gamma);
  QTRAIN_CHECK_F32("batch norm", beta);
  const int64_t rows = NormRows(x, gamma), channels = gamma.numel();
  if (rows == 0 || beta.numel() != channels) return BadNorm("batch norm", x, gamma);
  if (batch_stats) {
    QTRAIN_ASSIGN_OR_RETURN(saved.mean, Allocate(DType::kF32, {channels}));
    QTRAIN_ASSIGN_OR_RETURN(saved.var, Allocate(DType::kF32, {channels}));
  } else {
    QTRAIN_CHECK_F32("batch norm", saved.mean);
    QTRAIN_CHECK_F32("batch norm", saved.var);
    if (saved.mean.numel() != channels || saved.var.numel() != channels) {
      return BadNorm("batch norm statistics", saved.mean, gamma);
    }
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, x.shape()));
  QTRAIN_RETURN_IF_ERROR(BatchNormFwd(rows, channels, eps, batch_stats, F(x), F(gamma), F(beta),
                                      F(saved.mean), F(saved.var), F(y)));
  return y;
}

absl::StatusOr<Tensor> Backend::NormGrad(NormKind kind, float eps, const Tensor& x,
                                         const NormSaved& saved, const Tensor& gamma,
                                         const Tensor& dy, Tensor& gamma_grad, Tensor* beta_grad) {
  QTRAIN_CHECK_F32("normalization gradient", x);
  QTRAIN_CHECK_F32("normalization gradient", dy);
  QTRAIN_CHECK_F32("normalization gradient", gamma);
  QTRAIN_CHECK_F32("normalization gradient", gamma_grad);
  const int64_t rows = NormRows(x, gamma), cols = gamma.numel();
  if (rows == 0 || dy.shape() != x.shape() || gamma_grad.numel() != cols ||
      (beta_grad != nullptr && beta_grad->numel() != cols)) {
    return BadNorm("normalization gradient", dy, gamma);
  }
  const Tensor& stats = kind == NormKind::kRms ? saved.rstd : saved.mean;
  const int64_t stats_size = kind == NormKind::kBatch ? cols : rows;
  if (stats.empty() || stats.numel() != stats_size ||
      (kind != NormKind::kRms && saved.var.numel() != stats_size)) {
    return absl::InvalidArgumentError("normalization gradient: no saved statistics");
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor dx, Allocate(DType::kF32, x.shape()));
  QTRAIN_ASSIGN_OR_RETURN(Tensor dgamma, Allocate(DType::kF32, {cols}));
  QTRAIN_ASSIGN_OR_RETURN(Tensor dbeta, Allocate(DType::kF32, {cols}));
  switch (kind) {
    case NormKind::kLayer:
      QTRAIN_RETURN_IF_ERROR(LayerNormBwd(rows, cols, eps, F(x), F(saved.mean), F(saved.var),
                                          F(gamma), F(dy), F(dx), F(dgamma), F(dbeta)));
      break;
    case NormKind::kBatch:
      QTRAIN_RETURN_IF_ERROR(BatchNormBwd(rows, cols, eps, F(x), F(saved.mean), F(saved.var),
                                          F(gamma), F(dy), F(dx), F(dgamma), F(dbeta)));
      break;
    case NormKind::kRms:
      QTRAIN_RETURN_IF_ERROR(
          RmsNormBwd(rows, cols, F(x), F(saved.rstd), F(gamma), F(dy), F(dx), F(dgamma)));
      break;
  }
  QTRAIN_RETURN_IF_ERROR(AddInto(gamma_grad, dgamma));
  if (beta_grad != nullptr) QTRAIN_RETURN_IF_ERROR(AddInto(*beta_grad, dbeta));
  return dx;
}

absl::StatusOr<Tensor> Backend::Dropout(const Tensor& x, const CounterRng& rng, uint64_t base,
                                        float rate, Tensor& mask) {
  QTRAIN_CHECK_F32("dropout", x);
  if (!(rate >= 0.0f && rate < 1.0f)) {
    return absl::InvalidArgumentError(absl::StrCat("dropout: rate ", rate, " is not in [0, 1)"));
  }
  QTRAIN_ASSIGN_OR_RETURN(mask, Allocate(DType::kF32, x.shape()));
  QTRAIN_RETURN_IF_ERROR(DropoutMask(x.numel(), rng, base, rate, F(mask)));
  return Mul(x, mask);
}

absl::StatusOr<Tensor> Backend::Embed(const Tensor& table, const Tensor& ids) {
  QTRAIN_CHECK_F32("embedding", table);
  QTRAIN_CHECK_TENSOR("embedding", ids, DType::kS32);
  if (table.rank() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("embedding: table ", ShapeString(table.shape()), " is not (rows, cols)"));
  }
  Shape shape = ids.shape();
  shape.push_back(table.dim(1));
  QTRAIN_ASSIGN_OR_RETURN(Tensor y, Allocate(DType::kF32, std::move(shape)));
  QTRAIN_RETURN_IF_ERROR(Gather(ids.numel(), table.dim(0), table.dim(1), F(table),
                                static_cast<const int32_t*>(ids.raw()), F(y)));
  return y;
}

absl::Status Backend::EmbedGrad(const Tensor& ids, const Tensor& dy, Tensor& table_grad) {
  QTRAIN_CHECK_TENSOR("embedding gradient", ids, DType::kS32);
  QTRAIN_CHECK_F32("embedding gradient", dy);
  QTRAIN_CHECK_F32("embedding gradient", table_grad);
  if (table_grad.rank() != 2 || dy.numel() != ids.numel() * table_grad.dim(1)) {
    return Mismatch("embedding gradient", dy, table_grad);
  }
  return ScatterAdd(ids.numel(), table_grad.dim(0), table_grad.dim(1),
                    static_cast<const int32_t*>(ids.raw()), F(dy), F(table_grad));
}

absl::Status Backend::MaskScores(const AttentionMaskDesc& d, const Tensor* padding, float value,
                                 Tensor& scores) {
  QTRAIN_CHECK_F32("attention mask", scores);
  QTRAIN_RETURN_IF_ERROR(ValidateAttentionMaskDesc(d));
  if (scores.numel() != d.batch * d.heads * d.t * d.t) {
    return absl::InvalidArgumentError(absl::StrCat("attention mask: scores ",
                                                   ShapeString(scores.shape()), " are not (",
                                                   d.batch * d.heads, ", ", d.t, ", ", d.t, ")"));
  }
  const uint8_t* pad = nullptr;
  if (padding != nullptr) {
    QTRAIN_CHECK_TENSOR("attention mask", *padding, DType::kU8);
    if (padding->numel() != d.batch * (d.t - d.prefix)) {
      return absl::InvalidArgumentError(absl::StrCat("attention mask: padding ",
                                                     ShapeString(padding->shape()), " is not (",
                                                     d.batch, ", ", d.t - d.prefix, ")"));
    }
    pad = static_cast<const uint8_t*>(padding->raw());
  }
  return AttentionMask(d, pad, value, F(scores));
}

namespace {
absl::Status CheckSlots(const char* op, const Tensor& w, const Tensor& g,
                        std::initializer_list<const Tensor*> slots) {
  if (g.numel() != w.numel()) return Mismatch(op, w, g);
  for (const Tensor* s : slots) {
    if (s->numel() != w.numel()) return Mismatch(op, w, *s);
  }
  return absl::OkStatus();
}
}  // namespace

absl::StatusOr<UpdateResult> Backend::AdamW(const AdamWHyper& h, Tensor& w, Tensor& m, Tensor& v,
                                            const Tensor& g, bool dry_run) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&w, &m, &v, &g}) {
    QTRAIN_CHECK_F32("AdamW", *t);
  }
  QTRAIN_RETURN_IF_ERROR(CheckSlots("AdamW", w, g, {&m, &v}));
  return AdamWUpdate(rowops::AdamWArgs{F(w), F(m), F(v), F(g), w.numel(), h.clip, h.lr, h.wd, h.b1,
                                       h.b2, h.eps, h.c1, h.c2},
                     dry_run);
}

absl::StatusOr<UpdateResult> Backend::Sgd(const SgdHyper& h, Tensor& w, Tensor* momentum,
                                          const Tensor& g, bool dry_run) {
  QTRAIN_CHECK_F32("SGD", w);
  QTRAIN_CHECK_F32("SGD", g);
  if (momentum != nullptr) {
    QTRAIN_CHECK_F32("SGD", *momentum);
    QTRAIN_RETURN_IF_ERROR(CheckSlots("SGD", w, g, {momentum}));
  } else {
    QTRAIN_RETURN_IF_ERROR(CheckSlots("SGD", w, g, {}));
  }
  return SgdUpdate(rowops::SgdArgs{F(w), momentum != nullptr ? F(*momentum) : nullptr, F(g),
                                   w.numel(), h.clip, h.lr, h.wd, h.mu, h.nesterov},
                   dry_run);
}

absl::StatusOr<double> Backend::SumOfSquares(const std::vector<const Tensor*>& tensors) {
  std::vector<std::pair<const float*, int64_t>> arrays;
  arrays.reserve(tensors.size());
  for (const Tensor* t : tensors) {
    QTRAIN_CHECK_F32("sum of squares", *t);
    arrays.emplace_back(F(*t), t->numel());
  }
  return SumOfSquares(arrays);
}

absl::StatusOr<CrossEntropyResult> Backend::SoftmaxCrossEntropy(const CrossEntropyDesc& d,
                                                                const Tensor& logits,
                                                                const Tensor& targets,
                                                                const Tensor* padding,
                                                                Tensor* grad) {
  QTRAIN_CHECK_F32("cross-entropy", logits);
  QTRAIN_CHECK_TENSOR("cross-entropy", targets, DType::kS32);
  if (d.rows * d.classes != logits.numel() || targets.numel() != d.rows ||
      (d.shift_seq > 0 && d.rows % d.shift_seq != 0)) {
    return Mismatch("cross-entropy", logits, targets);
  }
  const uint8_t* pad = nullptr;
  if (padding != nullptr) {
    QTRAIN_CHECK_TENSOR("cross-entropy", *padding, DType::kU8);
    if (padding->numel() != d.rows) return Mismatch("cross-entropy padding", targets, *padding);
    pad = static_cast<const uint8_t*>(padding->raw());
  }
  float* g = nullptr;
  if (grad != nullptr) {
    QTRAIN_ASSIGN_OR_RETURN(*grad, Allocate(DType::kF32, logits.shape()));
    g = F(*grad);
  }
  return SoftmaxCrossEntropy(d, F(logits), static_cast<const int32_t*>(targets.raw()), pad, g);
}

absl::StatusOr<double> Backend::SquaredError(const Tensor& y, const Tensor& t, Tensor* grad) {
  QTRAIN_CHECK_F32("squared error", y);
  QTRAIN_CHECK_F32("squared error", t);
  if (y.numel() != t.numel()) return Mismatch("squared error", y, t);
  float* g = nullptr;
  if (grad != nullptr) {
    QTRAIN_ASSIGN_OR_RETURN(*grad, Allocate(DType::kF32, y.shape()));
    g = F(*grad);
  }
  return SquaredError(y.numel(), F(y), F(t), g);
}

absl::Status Backend::CheckLabels(const Tensor& labels, int64_t classes, bool has_ignore,
                                  int32_t ignore_index) {
  QTRAIN_CHECK_TENSOR("labels", labels, DType::kS32);
  return CheckLabels(labels.numel(), classes, static_cast<const int32_t*>(labels.raw()), has_ignore,
                     ignore_index);
}

absl::StatusOr<Tensor> Backend::EqualMask(const Tensor& ids, int64_t value) {
  QTRAIN_CHECK_TENSOR("equal mask", ids, DType::kS32);
  QTRAIN_ASSIGN_OR_RETURN(Tensor out, Allocate(DType::kU8, ids.shape()));
  QTRAIN_RETURN_IF_ERROR(EqualTo(ids.numel(), static_cast<const int32_t*>(ids.raw()), value,
                                 static_cast<uint8_t*>(out.raw())));
  return out;
}

absl::Status Backend::CheckFinite(const Tensor& x) {
  QTRAIN_CHECK_F32("finite check", x);
  return CheckFinite(x.numel(), F(x));
}

#undef QTRAIN_CHECK_F32
#undef QTRAIN_CHECK_TENSOR

}  // namespace qtrain
