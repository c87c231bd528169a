// Parameter-free modules and containers: activations, flatten, dropout, pooling, Sequential,
// Residual.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"

namespace qtrain::engine {
namespace {

absl::Status CheckF32(const std::string& path, const Tensor& x, int rank) {
  if (x.dtype() != DType::kF32 || (rank > 0 && x.rank() != rank)) {
    return absl::InvalidArgumentError(
        absl::StrCat("module \"", path, "\": expected an f32 input", rank > 0 ? " of rank " : "",
                     rank > 0 ? absl::StrCat(rank) : "", ", got ", DTypeName(x.dtype()), " ",
                     ShapeString(x.shape())));
  }
  return absl::OkStatus();
}

class Activation final : public Module {
 public:
  Activation(std::string path, EltwiseKind kind) : Module(std::move(path)), kind_(kind) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckF32(path(), x, 0));
    Tensor y = Tensor::Empty(DType::kF32, x.shape());
    QTRAIN_RETURN_IF_ERROR(
        ctx.backend->EltwiseFwd(kind_, x.numel(), x.data<float>(), y.data<float>()));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    Tensor dx = Tensor::Empty(DType::kF32, dy.shape());
    QTRAIN_RETURN_IF_ERROR(ctx.backend->EltwiseBwd(kind_, dy.numel(), input_.data<float>(),
                                                   dy.data<float>(), dx.data<float>()));
    input_ = Tensor();
    return dx;
  }

 private:
  EltwiseKind kind_;
  Tensor input_;
};

class Flatten final : public Module {
 public:
  using Module::Module;

  absl::StatusOr<Tensor> Forward(StepContext&, const Tensor& x) override {
    if (x.rank() < 1) {
      return absl::InvalidArgumentError("flatten needs a batch axis");
    }
    in_shape_ = x.shape();
    Tensor y = x.Share();
    y.Reshape({x.dim(0), x.numel() / std::max<int64_t>(x.dim(0), 1)});
    return y;
  }
  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (dy.empty()) {
      return Tensor();
    }
    Tensor dx = dy.Share();
    dx.Reshape(in_shape_);
    return dx;
  }

 private:
  Shape in_shape_;
};

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

class Pool final : public Module {
 public:
  Pool(std::string path, const PoolDesc& g, bool global)
      : Module(std::move(path)), geometry_(g), global_(global) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckF32(path(), x, 4));
    in_shape_ = x.shape();
    if (global_) {
      const int64_t n = x.dim(0), hw = x.dim(1) * x.dim(2), c = x.dim(3);
      Tensor y = Tensor::Zeros(DType::kF32, {n, c});
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t p = 0; p < hw; ++p) {
          for (int64_t ch = 0; ch < c; ++ch) {
            y.data<float>()[b * c + ch] += x.data<float>()[(b * hw + p) * c + ch];
          }
        }
      }
      for (float& v : y.span<float>()) {
        v /= static_cast<float>(hw);
      }
      return y;
    }
    PoolDesc d = Desc(x.shape());
    QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
    Tensor y = Tensor::Empty(DType::kF32, {d.n, d.out_h(), d.out_w(), d.c});
    QTRAIN_RETURN_IF_ERROR(ctx.backend->PoolFwd(d, x.data<float>(), y.data<float>()));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (in_shape_.size() != 4) {
      return NoForwardError(path());
    }
    Tensor dx = Tensor::Empty(DType::kF32, in_shape_);
    if (global_) {
      const int64_t n = in_shape_[0], hw = in_shape_[1] * in_shape_[2], c = in_shape_[3];
      for (int64_t b = 0; b < n; ++b) {
        for (int64_t p = 0; p < hw; ++p) {
          for (int64_t ch = 0; ch < c; ++ch) {
            dx.data<float>()[(b * hw + p) * c + ch] =
                dy.data<float>()[b * c + ch] / static_cast<float>(hw);
          }
        }
      }
      return dx;
    }
    if (input_.empty()) {
      return NoForwardError(path());
    }
    QTRAIN_RETURN_IF_ERROR(ctx.backend->PoolBwd(Desc(in_shape_), input_.data<float>(),
                                                dy.data<float>(), dx.data<float>()));
    input_ = Tensor();
    return dx;
  }

 private:
  PoolDesc Desc(const Shape& s) const {
    PoolDesc d = geometry_;
    d.n = s[0];
    d.h = s[1];
    d.w = s[2];
    d.c = s[3];
    return d;
  }

  PoolDesc geometry_;
  bool global_;
  Shape in_shape_;
  Tensor input_;
};

class Sequential final : public Module {
 public:
  Sequential(std::string path, std::vector<std::unique_ptr<Module>> layers)
      : Module(std::move(path)), layers_(std::move(layers)) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    Tensor h = x;
    for (auto& layer : layers_) {
      QTRAIN_ASSIGN_OR_RETURN(h, layer->Forward(ctx, h));
    }
    return h;
  }
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    Tensor g = dy;
    for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
      // An empty gradient means nothing before this point needs one (SetInputGradNeeded).
      if (g.empty()) {
        break;
      }
      QTRAIN_ASSIGN_OR_RETURN(g, (*it)->Backward(ctx, g));
    }
    return g;
  }
  std::vector<Module*> Children() override {
    std::vector<Module*> out;
    for (auto& l : layers_) {
      out.push_back(l.get());
    }
    return out;
  }
  // The first layers see the sequence's input; past a parameter-free layer (flatten,
  // activation...) the next one's input gradient is unused too.
  void SetInputGradNeeded(bool needed) override {
    for (auto& layer : layers_) {
      layer->SetInputGradNeeded(needed);
      std::vector<Param*> params;
      layer->CollectParams(&params);
      if (needed || !params.empty()) {
        break;
      }
    }
  }

 private:
  std::vector<std::unique_ptr<Module>> layers_;
};

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

 private:
  std::unique_ptr<Module> body_;
  bool needed_ = true;
};

}  // namespace

std::unique_ptr<Module> MakeActivation(std::string path, EltwiseKind kind) {
  return std::make_unique<Activation>(std::move(path), kind);
}
std::unique_ptr<Module> MakeFlatten(std::string path) {
  return std::make_unique<Flatten>(std::move(path));
}
std::unique_ptr<Module> MakeDropout(std::string path, float rate) {
  return std::make_unique<Dropout>(std::move(path), rate);
}
std::unique_ptr<Module> MakePool(std::string path, const PoolDesc& geometry, bool global_avg) {
  return std::make_unique<Pool>(std::move(path), geometry, global_avg);
}
std::unique_ptr<Module> MakeSequential(std::string path,
                                       std::vector<std::unique_ptr<Module>> layers) {
  return std::make_unique<Sequential>(std::move(path), std::move(layers));
}
std::unique_ptr<Module> MakeResidual(std::string path, std::unique_ptr<Module> body) {
  return std::make_unique<Residual>(std::move(path), std::move(body));
}

}  // namespace qtrain::engine
