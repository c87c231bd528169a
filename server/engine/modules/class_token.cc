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
    Tensor y = Tensor::Empty(DType::kF32, {n, tokens_ + 1, d_});
    for (int64_t i = 0; i < n; ++i) {
      float* out = y.data<float>() + i * (row + d_);
      std::copy_n(token_.value.data<float>(), d_, out);
      std::copy_n(x.data<float>() + i * row, row, out + d_);
    }
    kept_ = ctx.training;
    return y;
  }

  // The token's gradient is the sum of each example's first row; the rest is dx.
  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (!kept_) return NoForwardError(path());
    kept_ = false;
    const int64_t n = dy.dim(0), row = tokens_ * d_;
    Tensor first = Tensor::Empty(DType::kF32, {n, d_});
    Tensor dx = Tensor::Empty(DType::kF32, {n, tokens_, d_});
    for (int64_t i = 0; i < n; ++i) {
      const float* in = dy.data<float>() + i * (row + d_);
      std::copy_n(in, d_, first.data<float>() + i * d_);
      std::copy_n(in + d_, row, dx.data<float>() + i * row);
    }
    AccumulateBiasGrad(first, token_.grad);
    return dx;
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
