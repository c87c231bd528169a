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
    mask_ = Tensor::Empty(DType::kF32, x.shape());
    Tensor y = Tensor::Empty(DType::kF32, x.shape());
    const float scale = 1.0f / (1.0f - rate_);
    const auto threshold = static_cast<uint64_t>(static_cast<double>(rate_) * 0x1p32);
    const uint64_t base = StreamSeed(ctx.step, path()) << 24;
    for (int64_t i = 0; i < x.numel(); ++i) {
      const bool keep = (ctx.rng->Bits(base + static_cast<uint64_t>(i)) >> 32) >= threshold;
      mask_.data<float>()[i] = keep ? scale : 0.0f;
      y.data<float>()[i] = x.data<float>()[i] * mask_.data<float>()[i];
    }
    return y;
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph&, const std::string& x) override {
    return x;  // inference: the identity
  }

  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (mask_.empty()) {
      return dy.Share();
    }
    Tensor dx = Tensor::Empty(DType::kF32, dy.shape());
    const float* __restrict g = dy.data<float>();
    const float* __restrict m = mask_.data<float>();
    float* __restrict out = dx.data<float>();
#pragma omp simd
    for (int64_t i = 0; i < dx.numel(); ++i) {
      out[i] = g[i] * m[i];
    }
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
