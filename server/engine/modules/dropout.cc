// Dropout (Flax Dropout, torch.nn.Dropout): keeps each element with probability 1 − rate, scaled
// by 1 / (1 − rate), in training steps only; masks are reproducible from (seed, step, path).
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Dropout final : public Module {
 public:
  Dropout(std::string path, float rate) : Module(std::move(path)), rate_(rate) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckF32(path(), x, 0));
    if (!ctx.training || rate_ <= 0.0f) {
      mask_ = Tensor();
      return x.Share();
    }
    // Keep with probability 1 - rate, scaled by 1 / (1 - rate); the mask is a pure function of
    // (session seed, step, module path, element), so runs are reproducible.
    if (ctx.rng == nullptr) {
      return absl::InternalError("dropout needs the session's generator");
    }
    return ctx.backend->Dropout(x, *ctx.rng, StreamSeed(ctx.step, path()) << 24, rate_, mask_);
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph&, const std::string& x) override {
    return x;  // inference: the identity
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (mask_.empty()) {
      return dy.Share();
    }
    absl::StatusOr<Tensor> dx = ctx.backend->Mul(dy, mask_);
    mask_ = Tensor();
    return dx;
  }

 private:
  float rate_;
  Tensor mask_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildDropout(const proto::Module& m, ModuleSite& site) {
  const float r = m.dropout().rate();
  if (!(r >= 0.0f && r < 1.0f)) {
    return site.Bad(absl::StrCat("dropout rate ", r, " must be in [0, 1)"));
  }
  return std::make_unique<Dropout>(site.path(), r);
}

}  // namespace

extern const ModuleKind kDropoutKind = {proto::Module::kDropout, "dropout", "Dropout",
                                        FlattenUse::kPasses, BuildDropout};

}  // namespace qtrain::engine
