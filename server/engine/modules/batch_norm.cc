// BatchNorm (torch.nn.BatchNorm1d/2d, Flax BatchNorm): per-channel normalization over every axis
// but the last. Parameters scale / bias (PyTorch weight / bias); non-trainable state mean / var
// (PyTorch running_mean / running_var). Training steps normalise with the batch statistics and
// update the state (model.proto's BatchNorm gives both momentum conventions); every other pass
// normalises with the state. Float, never quantized (Qwix folds BatchNorm only for ODML export).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class BatchNorm final : public Module {
 public:
  // `keep`: the weight of the old running value in an update; `unbiased`: store n/(n − 1)·var.
  BatchNorm(std::string path, int64_t channels, float eps, float keep, bool unbiased)
      : Module(std::move(path)), channels_(channels), eps_(eps), keep_(keep), unbiased_(unbiased) {
    scale_ = MakeParam(ChildPath("scale"), Constant({channels}, 1.0f), "weight");
    bias_ = MakeParam(ChildPath("bias"), Constant({channels}, 0.0f), "bias");
    mean_ = {ChildPath("mean"), "running_mean", Constant({channels}, 0.0f)};
    var_ = {ChildPath("var"), "running_var", Constant({channels}, 1.0f)};
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, channels_, 2));
    const int64_t rows = x.numel() / channels_;
    if (!ctx.training) {
      input_ = Tensor();
      Backend::NormSaved running{mean_.value.Share(), var_.value.Share(), Tensor()};
      return ctx.backend->BatchNorm(eps_, false, x, scale_.value, bias_.value, running);
    }
    if (rows < 2) {
      // PyTorch refuses too: the unbiased variance of one value is undefined.
      return absl::InvalidArgumentError(
          absl::StrCat("module \"", path(),
                       "\": batch normalization in training needs more than one value "
                       "per channel, got input ",
                       ShapeString(x.shape())));
    }
    QTRAIN_ASSIGN_OR_RETURN(
        Tensor y, ctx.backend->BatchNorm(eps_, true, x, scale_.value, bias_.value, batch_));
    // Running statistics: keep·running + (1 − keep)·batch (the variance unbiased as PyTorch's).
    const float correction =
        unbiased_ ? static_cast<float>(rows) / static_cast<float>(rows - 1) : 1.0f;
    QTRAIN_RETURN_IF_ERROR(ctx.backend->Axpby(1.0f - keep_, batch_.mean, keep_, mean_.value));
    QTRAIN_RETURN_IF_ERROR(
        ctx.backend->Axpby((1.0f - keep_) * correction, batch_.var, keep_, var_.value));
    input_ = x.Share();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    absl::StatusOr<Tensor> dx =
        ctx.backend->NormGrad(Backend::NormKind::kBatch, eps_, input_, batch_, scale_.value, dy,
                              scale_.grad, &bias_.grad);
    input_ = Tensor();
    return dx;
  }

  void CollectParams(std::vector<Param*>* out) override {
    out->push_back(&scale_);
    out->push_back(&bias_);
  }
  void CollectState(std::vector<StateTensor*>* out) override {
    out->push_back(&mean_);
    out->push_back(&var_);
  }

  // Inference: ONNX BatchNormalization with the running statistics, on NCHW (channels on
  // axis 1); the quantized convolution before it keeps its own QDQ, nothing is folded.
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    auto node = [&](const std::string& in) {
      return g.Op("BatchNormalization",
                  {in, g.Param(scale_), g.Param(bias_), g.Constant(mean_.name, mean_.value),
                   g.Constant(var_.name, var_.value)},
                  path(), {OnnxGraph::FloatAttr("epsilon", eps_)});
    };
    if (rank_ == 4) return g.ToNhwc(node(g.ToNchw(x, path())), path());
    if (rank_ == 2) return node(x);
    return absl::UnimplementedError(absl::StrCat(
        "module \"", path(), "\": ONNX export of batch normalization over rank ", rank_));
  }

  void set_rank(int rank) { rank_ = rank; }

 private:
  int64_t channels_;
  float eps_, keep_;
  bool unbiased_;
  int rank_ = 0;  // of the batched input, for the export
  Param scale_, bias_;
  StateTensor mean_, var_;
  Tensor input_;
  Backend::NormSaved batch_;  // the batch statistics, for the backward
};

absl::StatusOr<std::unique_ptr<Module>> BuildBatchNorm(const proto::Module& m, ModuleSite& site) {
  const auto& b = m.batch_norm();
  if (!proto::BatchNorm::Convention_IsValid(b.convention())) {
    return site.Bad(
        absl::StrCat("unknown batch_norm convention ", b.convention(), " (PYTORCH = 0, FLAX = 1)"));
  }
  const bool flax = b.convention() == proto::BatchNorm::FLAX;
  const float momentum = b.has_momentum() ? b.momentum() : (flax ? 0.99f : 0.1f);
  if (!(momentum >= 0.0f && momentum <= 1.0f)) {
    return site.Bad(absl::StrCat("momentum ", momentum, " must be in [0, 1]"));
  }
  const float eps = b.epsilon() == 0.0f ? 1e-5f : b.epsilon();
  if (!(eps > 0.0f) || !std::isfinite(eps)) {
    return site.Bad(absl::StrCat("epsilon ", b.epsilon(), " must be > 0"));
  }
  if (site.shape().empty()) {
    return site.Bad("batch_norm needs a channel axis");
  }
  const int64_t channels = site.shape().back();
  // The running statistics count with the parameters toward the model's size limit.
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({4, channels}));
  const int rank = static_cast<int>(site.shape().size()) + 1;
  return site.Allocate([&]() -> std::unique_ptr<Module> {
    auto bn = std::make_unique<BatchNorm>(site.path(), channels, eps,
                                          flax ? momentum : 1.0f - momentum, !flax);
    bn->set_rank(rank);
    return bn;
  });
}

}  // namespace

extern const ModuleKind kBatchNormKind = {proto::Module::kBatchNorm, "batch_norm", "BatchNorm",
                                          FlattenUse::kBreaks, BuildBatchNorm};

}  // namespace qtrain::engine
