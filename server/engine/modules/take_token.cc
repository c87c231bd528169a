// TakeToken: (T, D) → (D), token `index` of each example (ViT's head reads the class token).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class TakeToken final : public Module {
 public:
  TakeToken(std::string path, int64_t tokens, int64_t d, int64_t index)
      : Module(std::move(path)), tokens_(tokens), d_(d), index_(index) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckTokens(path(), x, tokens_, d_));
    CopyDesc take;  // row `index` of each example
    take.count[0] = x.dim(0);
    take.src_stride[0] = tokens_ * d_;
    take.src_offset = index_ * d_;
    take.dst_stride[0] = d_;
    take.block = d_;
    return ctx.backend->Gathered(take, x, {x.dim(0), d_});
  }
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (dy.empty()) return Tensor();
    CopyDesc put;  // back to row `index`; the other rows' gradient is 0
    put.count[0] = dy.dim(0);
    put.src_stride[0] = d_;
    put.dst_stride[0] = tokens_ * d_;
    put.dst_offset = index_ * d_;
    put.block = d_;
    return ctx.backend->Gathered(put, dy, {dy.dim(0), tokens_, d_}, /*zero=*/true);
  }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string token = g.Op(
        "Slice", {x, g.Ints("start", {index_}), g.Ints("end", {index_ + 1}), g.Ints("axis", {1})},
        path() + "/slice");
    return g.Op("Reshape", {token, g.Ints("flat", {0, -1})}, path());
  }

 private:
  int64_t tokens_, d_, index_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildTakeToken(const proto::Module& m, ModuleSite& site) {
  const Shape in = site.shape();
  if (in.size() != 2) {
    return site.Bad(absl::StrCat("take_token needs (T, D) tokens, got ", ShapeString(in)));
  }
  const int64_t index = m.take_token().index();
  if (index < 0 || index >= in[0]) {
    return site.Bad(absl::StrCat("take_token index ", index, " must be in [0, ", in[0], ")"));
  }
  site.shape() = {in[1]};
  return std::make_unique<TakeToken>(site.path(), in[0], in[1], index);
}

}  // namespace

extern const ModuleKind kTakeTokenKind = {proto::Module::kTakeToken, "take_token", "TakeToken",
                                          FlattenUse::kBreaks, BuildTakeToken};

}  // namespace qtrain::engine
