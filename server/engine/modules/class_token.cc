// ClassToken: prepends a learned token to every example's sequence, (T, D) → (T + 1, D), as
// torchvision's VisionTransformer (class_token, zeros at init) and big_vision's "cls".
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class ClassToken final : public Module {
 public:
  ClassToken(std::string path, int64_t tokens, int64_t d)
      : Module(std::move(path)), tokens_(tokens), d_(d) {
    token_ = MakeParam(ChildPath("token"), Constant({1, 1, d}, 0.0f), "");
    TorchNameIsModulePath(token_, this->path());
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckTokens(path(), x, tokens_, d_));
    const int64_t n = x.dim(0), row = tokens_ * d_;
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, ctx.backend->Allocate(DType::kF32, {n, tokens_ + 1, d_}));
    CopyDesc token;  // the token before each example's rows
    token.count[0] = n;
    token.dst_stride[0] = row + d_;
    token.block = d_;
    QTRAIN_RETURN_IF_ERROR(ctx.backend->CopyBlocks(token, token_.value, y));
    CopyDesc rows;
    rows.count[0] = n;
    rows.src_stride[0] = row;
    rows.dst_stride[0] = row + d_;
    rows.dst_offset = d_;
    rows.block = row;
    QTRAIN_RETURN_IF_ERROR(ctx.backend->CopyBlocks(rows, x, y));
    ++ctx.padding_prefix;  // the token is never padding (attention masks padded keys after it)
    kept_ = ctx.training;
    return y;
  }

  // The token's gradient is the sum of each example's first row; the rest is dx.
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (!kept_) return NoForwardError(path());
    kept_ = false;
    const int64_t n = dy.dim(0), row = tokens_ * d_;
    CopyDesc first;  // each example's first row: the token's gradient sums them
    first.count[0] = n;
    first.src_stride[0] = row + d_;
    first.dst_stride[0] = d_;
    first.block = d_;
    QTRAIN_ASSIGN_OR_RETURN(Tensor token_rows, ctx.backend->Gathered(first, dy, {n, d_}));
    QTRAIN_RETURN_IF_ERROR(ctx.backend->AccumulateBiasGrad(token_rows, token_.grad, d_));
    CopyDesc rest;
    rest.count[0] = n;
    rest.src_stride[0] = row + d_;
    rest.src_offset = d_;
    rest.dst_stride[0] = row;
    rest.block = row;
    return ctx.backend->Gathered(rest, dy, {n, tokens_, d_});
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&token_); }

  // Concat(Expand(token, (N, 1, D)), x) along the tokens.
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string& base = path();
    const std::string batch = g.Op(
        "Slice", {g.Op("Shape", {x}, base + "/shape"), g.Ints("zero", {0}), g.Ints("one", {1})},
        base + "/batch");
    const std::string target = g.Op("Concat", {batch, g.Ints("token_shape", {1, d_})},
                                    base + "/target", {OnnxGraph::IntAttr("axis", 0)});
    const std::string tokens = g.Op("Expand", {g.Param(token_), target}, base + "/tokens");
    return g.Op("Concat", {tokens, x}, base, {OnnxGraph::IntAttr("axis", 1)});
  }

 private:
  int64_t tokens_, d_;
  Param token_;
  bool kept_ = false;
};

absl::StatusOr<std::unique_ptr<Module>> BuildClassToken(const proto::Module&, ModuleSite& site) {
  const Shape in = site.shape();
  if (in.size() != 2) {
    return site.Bad(absl::StrCat("class_token needs (T, D) tokens, got ", ShapeString(in)));
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({in[1]}));
  site.shape() = {in[0] + 1, in[1]};
  return site.Allocate([&] { return std::make_unique<ClassToken>(site.path(), in[0], in[1]); });
}

}  // namespace

extern const ModuleKind kClassTokenKind = {proto::Module::kClassToken, "class_token", "ClassToken",
                                           FlattenUse::kBreaks, BuildClassToken};

}  // namespace qtrain::engine
