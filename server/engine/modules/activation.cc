// Activation: an elementwise function (ReLU, GELU both forms, SiLU, tanh, ReLU6, hard-swish,
// sigmoid), float; the backend computes it.
#include <iterator>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Activation final : public Module {
 public:
  Activation(std::string path, EltwiseKind kind) : Module(std::move(path)), kind_(kind) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckF32(path(), x, 0));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, ctx.backend->Activation(kind_, x));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string& name = path();
    switch (kind_) {
      case EltwiseKind::kRelu:
        return g.Op("Relu", {x}, name);
      case EltwiseKind::kTanh:
        return g.Op("Tanh", {x}, name);
      case EltwiseKind::kSilu:
        return g.Op("Mul", {x, g.Op("Sigmoid", {x}, name)}, name);
      case EltwiseKind::kRelu6:
        return g.Op("Clip", {x, g.Scalar("zero", 0.0f), g.Scalar("six", 6.0f)}, name);
      case EltwiseKind::kHardSwish:
        return g.Op("HardSwish", {x}, name);
      case EltwiseKind::kSigmoid:
        return g.Op("Sigmoid", {x}, name);
      case EltwiseKind::kGeluErf: {
        // 0.5 x (1 + erf(x / sqrt(2))); opset 17 has no Gelu.
        const std::string e =
            g.Op("Erf", {g.Op("Mul", {x, g.Scalar("inv_sqrt2", 0.7071067811865476f)}, name)}, name);
        const std::string t = g.Op("Add", {e, g.Scalar("one", 1.0f)}, name);
        return g.Op("Mul", {g.Op("Mul", {x, t}, name), g.Scalar("half", 0.5f)}, name);
      }
      case EltwiseKind::kGeluTanh: {
        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), flax.linen.gelu's tanh form.
        const std::string x3 = g.Op("Mul", {g.Op("Mul", {x, x}, name), x}, name);
        const std::string inner =
            g.Op("Mul",
                 {g.Op("Add", {x, g.Op("Mul", {x3, g.Scalar("gelu_a", 0.044715f)}, name)}, name),
                  g.Scalar("gelu_c", 0.7978845608028654f)},
                 name);
        const std::string t =
            g.Op("Add", {g.Op("Tanh", {inner}, name), g.Scalar("one", 1.0f)}, name);
        return g.Op("Mul", {g.Op("Mul", {x, t}, name), g.Scalar("half", 0.5f)}, name);
      }
    }
    return absl::InternalError(
        absl::StrCat("module \"", name, "\": no ONNX form of this activation"));
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    absl::StatusOr<Tensor> dx = ctx.backend->ActivationGrad(kind_, input_, dy);
    input_ = Tensor();
    return dx;
  }

 private:
  EltwiseKind kind_;
  Tensor input_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildActivation(const proto::Module& m, ModuleSite& site) {
  QTRAIN_ASSIGN_OR_RETURN(EltwiseKind kind, ActivationKind(site.path(), m.activation().kind()));
  return std::make_unique<Activation>(site.path(), kind);
}

}  // namespace

extern const ModuleKind kActivationKind = {proto::Module::kActivation, "activation", "Activation",
                                           FlattenUse::kPasses, BuildActivation};

std::unique_ptr<Module> MakeActivation(std::string path, EltwiseKind kind) {
  return std::make_unique<Activation>(std::move(path), kind);
}

absl::StatusOr<EltwiseKind> ActivationKind(const std::string& path, int kind) {
  static const EltwiseKind kKinds[] = {
      EltwiseKind::kRelu,  EltwiseKind::kGeluTanh,  EltwiseKind::kSilu,    EltwiseKind::kTanh,
      EltwiseKind::kRelu6, EltwiseKind::kHardSwish, EltwiseKind::kSigmoid, EltwiseKind::kGeluErf};
  if (kind < 0 || kind >= static_cast<int>(std::size(kKinds))) {
    return absl::InvalidArgumentError(
        absl::StrCat("module \"", path, "\": unknown activation kind ", kind,
                     " (RELU = 0, GELU = 1, SILU = 2, TANH = 3, RELU6 = 4, HARD_SWISH = 5, "
                     "SIGMOID = 6, GELU_EXACT = 7)"));
  }
  return kKinds[kind];
}

}  // namespace qtrain::engine
