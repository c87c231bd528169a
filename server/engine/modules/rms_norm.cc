// RMSNorm (Flax RMSNorm, Llama's LlamaRMSNorm): x / sqrt(mean(x²) + eps) · scale over the last
// axis. Float, never quantized.
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

// y = x / sqrt(mean(x²) + eps) · scale. oneDNN 2.6 has no RMS normalization: plain loops.
class RmsNorm final : public Module {
 public:
  RmsNorm(std::string path, int64_t features, float eps)
      : Module(std::move(path)), features_(features), eps_(eps) {
    scale_ = MakeParam(ChildPath("scale"), Constant({features}, 1.0f), "weight");
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, features_, 2));
    const int64_t rows = x.numel() / features_;
    Tensor y = Tensor::Empty(DType::kF32, x.shape());
    rstd_ = Tensor::Empty(DType::kF32, {rows});
    const float* px = x.data<float>();
    const float* s = scale_.value.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      double sq = 0;
      for (int64_t j = 0; j < features_; ++j) {
        sq += px[r * features_ + j] * px[r * features_ + j];
      }
      const float rstd = 1.0f / std::sqrt(static_cast<float>(sq / features_) + eps_);
      rstd_.data<float>()[r] = rstd;
      for (int64_t j = 0; j < features_; ++j) {
        y.data<float>()[r * features_ + j] = px[r * features_ + j] * rstd * s[j];
      }
    }
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    const int64_t rows = dy.numel() / features_;
    Tensor dx = Tensor::Empty(DType::kF32, dy.shape());
    const float* px = input_.data<float>();
    const float* g = dy.data<float>();
    const float* s = scale_.value.data<float>();
    float* ds = scale_.grad.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      const float rstd = rstd_.data<float>()[r];
      double dot = 0;  // Σ g·scale·x
      for (int64_t j = 0; j < features_; ++j) {
        const int64_t i = r * features_ + j;
        dot += g[i] * s[j] * px[i];
        ds[j] += g[i] * px[i] * rstd;
      }
      const float k = rstd * rstd * rstd * static_cast<float>(dot) / static_cast<float>(features_);
      for (int64_t j = 0; j < features_; ++j) {
        const int64_t i = r * features_ + j;
        dx.data<float>()[i] = rstd * g[i] * s[j] - k * px[i];
      }
    }
    input_ = Tensor();
    return dx;
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&scale_); }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string ms = g.Op("ReduceMean", {g.Op("Mul", {x, x}, path())}, path(),
                                {OnnxGraph::IntsAttr("axes", {-1})});
    const std::string rms =
        g.Op("Sqrt", {g.Op("Add", {ms, g.Scalar("eps", eps_)}, path())}, path());
    return g.Op("Mul", {g.Op("Div", {x, rms}, path()), g.Param(scale_)}, path());
  }

 private:
  int64_t features_;
  float eps_;
  Param scale_;
  Tensor input_, rstd_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildRmsNorm(const proto::Module& m, ModuleSite& site) {
  QTRAIN_ASSIGN_OR_RETURN(const float eps, NormEpsilon(site, m.rms_norm().epsilon()));
  return site.Allocate(
      [&] { return std::make_unique<RmsNorm>(site.path(), site.shape().back(), eps); });
}

}  // namespace

extern const ModuleKind kRmsNormKind = {proto::Module::kRmsNorm, "rms_norm", "RMSNorm",
                                        FlattenUse::kBreaks, BuildRmsNorm};

}  // namespace qtrain::engine
