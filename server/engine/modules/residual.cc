// Residual: y = x + body(x).
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

// a + b into a new tensor (inputs may be shared with other modules' residuals).
Tensor Sum(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::Empty(DType::kF32, a.shape());
  const float* __restrict pa = a.data<float>();
  const float* __restrict pb = b.data<float>();
  float* __restrict po = out.data<float>();
  const int64_t n = a.numel();
#pragma omp parallel for simd if (n >= (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    po[i] = pa[i] + pb[i];
  }
  return out;
}

class Residual final : public Module {
 public:
  Residual(std::string path, std::unique_ptr<Module> body)
      : Module(std::move(path)), body_(std::move(body)) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, body_->Forward(ctx, x));
    if (y.shape() != x.shape()) {
      return absl::InvalidArgumentError(absl::StrCat("residual \"", path(), "\": body maps ",
                                                     ShapeString(x.shape()), " to ",
                                                     ShapeString(y.shape())));
    }
    return Sum(y, x);
  }
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx, body_->Backward(ctx, dy));
    if (!needed_) {
      return Tensor();
    }
    if (dx.empty()) {
      return dy.Share();
    }
    return Sum(dx, dy);
  }
  std::vector<Module*> Children() override { return {body_.get()}; }
  void SetInputGradNeeded(bool needed) override {
    needed_ = needed;
    body_->SetInputGradNeeded(needed);
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    QTRAIN_ASSIGN_OR_RETURN(std::string y, body_->ExportOnnx(g, x));
    return g.Op("Add", {x, y}, path());
  }

 private:
  std::unique_ptr<Module> body_;
  bool needed_ = true;
};

absl::StatusOr<std::unique_ptr<Module>> BuildResidual(const proto::Module& m, ModuleSite& site) {
  if (!m.residual().has_body()) {
    return site.Bad("residual needs a body");
  }
  const Shape in = site.shape();
  QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> body, site.BuildBody(m.residual().body()));
  if (site.shape() != in) {
    return site.Bad(
        absl::StrCat("residual body maps ", ShapeString(in), " to ", ShapeString(site.shape())));
  }
  return std::make_unique<Residual>(site.path(), std::move(body));
}

}  // namespace

extern const ModuleKind kResidualKind = {proto::Module::kResidual, "residual", "Residual",
                                         FlattenUse::kBreaks, BuildResidual};

}  // namespace qtrain::engine
