// GatedMlp (Llama / Qwen2 / Mistral's MLP): y = down_proj(act(gate_proj(x)) · up_proj(x)) over the
// last axis. The three projections are Linear children (dense ops under the rules); the
// activation and the product stay float and run on the backend.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class GatedMlp final : public Module {
 public:
  GatedMlp(std::string path, int64_t d, int64_t hidden, EltwiseKind act, bool bias, uint64_t seed)
      : Module(std::move(path)), d_(d) {
    gate_ = MakeLinear(ChildPath("gate_proj"), d, hidden, bias, seed);
    up_ = MakeLinear(ChildPath("up_proj"), d, hidden, bias, seed);
    down_ = MakeLinear(ChildPath("down_proj"), hidden, d, bias, seed);
    act_ = MakeActivation(ChildPath("act_fn"), act);
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, d_, 2));
    QTRAIN_ASSIGN_OR_RETURN(Tensor gate, gate_->Forward(ctx, x));
    QTRAIN_ASSIGN_OR_RETURN(Tensor act, act_->Forward(ctx, gate));
    QTRAIN_ASSIGN_OR_RETURN(Tensor up, up_->Forward(ctx, x));
    QTRAIN_ASSIGN_OR_RETURN(Tensor h, ctx.backend->Mul(act, up));
    if (ctx.training) {
      act_out_ = std::move(act);
      up_out_ = std::move(up);
    } else {
      act_out_ = up_out_ = Tensor();
    }
    return down_->Forward(ctx, h);
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (act_out_.empty()) {
      return NoForwardError(path());
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor dh, down_->Backward(ctx, dy));
    // d act = dh · up, d up = dh · act, each in place of the saved factor it no longer needs.
    QTRAIN_RETURN_IF_ERROR(ctx.backend->MulInto(up_out_, dh));
    QTRAIN_RETURN_IF_ERROR(ctx.backend->MulInto(act_out_, dh));
    Tensor d_act = std::move(up_out_), d_up = std::move(act_out_);
    act_out_ = up_out_ = Tensor();
    QTRAIN_ASSIGN_OR_RETURN(Tensor d_gate, act_->Backward(ctx, d_act));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx, gate_->Backward(ctx, d_gate));
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx_up, up_->Backward(ctx, d_up));
    if (dx.empty() || dx_up.empty()) {  // the input gradient is not needed
      return Tensor();
    }
    QTRAIN_RETURN_IF_ERROR(ctx.backend->AddInto(dx, dx_up));
    return dx;
  }

  std::vector<Module*> Children() override {
    return {gate_.get(), up_.get(), down_.get(), act_.get()};
  }
  void SetInputGradNeeded(bool needed) override {
    gate_->SetInputGradNeeded(needed);
    up_->SetInputGradNeeded(needed);
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    QTRAIN_ASSIGN_OR_RETURN(std::string gate, gate_->ExportOnnx(g, x));
    QTRAIN_ASSIGN_OR_RETURN(std::string act, act_->ExportOnnx(g, gate));
    QTRAIN_ASSIGN_OR_RETURN(std::string up, up_->ExportOnnx(g, x));
    return down_->ExportOnnx(g, g.Op("Mul", {act, up}, path()));
  }

 private:
  int64_t d_;
  std::unique_ptr<Module> gate_, up_, down_, act_;
  Tensor act_out_, up_out_;  // training: the two factors of the product, for the backward
};

absl::StatusOr<std::unique_ptr<Module>> BuildGatedMlp(const proto::Module& m, ModuleSite& site) {
  const auto& g = m.gated_mlp();
  const Shape& shape = site.shape();
  if (shape.empty()) {
    return site.Bad("gated_mlp needs examples with a feature axis");
  }
  const int64_t d = shape.back();
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("hidden_features", g.hidden_features()));
  QTRAIN_ASSIGN_OR_RETURN(EltwiseKind act, ActivationKind(site.path(), g.activation()));
  const int64_t h = g.hidden_features();
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({3, d, h}, g.bias() ? 2 * h + d : 0));
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  site.AddActivations(3 * h * rows);  // gate, its activation and up, saved for the backward
  return site.Allocate(
      [&] { return std::make_unique<GatedMlp>(site.path(), d, h, act, g.bias(), site.seed()); });
}

}  // namespace

extern const ModuleKind kGatedMlpKind = {proto::Module::kGatedMlp, "gated_mlp", "GatedMlp",
                                         FlattenUse::kBreaks, BuildGatedMlp};

}  // namespace qtrain::engine
