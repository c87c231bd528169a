// Linear and Conv2D: the modules whose matmul / convolution rules quantize.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/quant_op.h"

namespace qtrain::engine {
namespace {

absl::Status CheckInput(const std::string& path, const Tensor& x, int64_t features, int min_rank) {
  if (x.dtype() != DType::kF32 || x.rank() < min_rank || x.shape().back() != features) {
    return absl::InvalidArgumentError(absl::StrCat(
        "module \"", path, "\": expected f32 input with ", features,
        " features in the last axis, got ", DTypeName(x.dtype()), " ", ShapeString(x.shape())));
  }
  return absl::OkStatus();
}

// y[r, :] += bias for every row.
void AddBias(Tensor& y, const Tensor& bias) {
  const int64_t n = bias.numel(), rows = y.numel() / n;
  float* py = y.data<float>();
  const float* pb = bias.data<float>();
#pragma omp parallel for if (rows * n >= (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    float* __restrict row = py + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      row[j] += pb[j];
    }
  }
}

// grad[j] += Σ_r dy[r, j].
void AccumulateBiasGrad(const Tensor& dy, Tensor& grad) {
  const int64_t n = grad.numel(), rows = dy.numel() / n;
  const float* pd = dy.data<float>();
  float* pg = grad.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict row = pd + r * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      pg[j] += row[j];
    }
  }
}

class Linear final : public Module {
 public:
  Linear(std::string path, int64_t in, int64_t out, bool bias, uint64_t seed)
      : Module(std::move(path)),
        in_(in),
        out_(out),
        dot_(this->path(), kDotGeneral, "dot_general0", true) {
    kernel_.name = ChildPath("kernel");
    kernel_.value = LecunNormal({in, out}, in, seed, kernel_.name);
    kernel_.accumulates = false;
    kernel_.grad = Tensor::Zeros(DType::kF32, {in, out});
    if (bias) {
      bias_ = std::make_unique<Param>();
      bias_->name = ChildPath("bias");
      bias_->value = Tensor::Zeros(DType::kF32, {out});
      bias_->grad = Tensor::Zeros(DType::kF32, {out});
    }
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckInput(path(), x, in_, 2));
    Tensor rows = x.Share();  // kept for the backward; nobody writes x
    rows.Reshape({x.numel() / in_, in_});
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, dot_.Forward(ctx, rows, kernel_.value, x.shape(), {}));
    if (bias_) {
      AddBias(y, bias_->value);
    }
    Shape out_shape = x.shape();
    out_shape.back() = out_;
    y.Reshape(out_shape);
    if (ctx.training) {
      input_ = std::move(rows);
    } else {
      input_ = Tensor();
    }
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    Tensor g = dy.Share();
    g.Reshape({dy.numel() / out_, out_});
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients grads, dot_.Backward(ctx, input_, kernel_.value, g));
    kernel_.grad = std::move(grads.dw);  // each parameter is used by one op per step
    if (bias_) {
      AccumulateBiasGrad(g, bias_->grad);
    }
    input_ = Tensor();
    if (grads.dx.empty()) {
      return Tensor();
    }
    Shape in_shape = dy.shape();
    in_shape.back() = in_;
    grads.dx.Reshape(in_shape);
    return std::move(grads.dx);
  }

  void CollectParams(std::vector<Param*>* out) override {
    out->push_back(&kernel_);
    if (bias_) {
      out->push_back(bias_.get());
    }
  }
  absl::Status PlanOps(const CompiledRules* rules) override { return dot_.Plan(rules, in_); }
  void SetInputGradNeeded(bool needed) override { dot_.set_skip_dx(!needed); }
  void ReportOps(std::vector<std::pair<int, std::string>>* out) override {
    out->emplace_back(dot_.rule_index(), path() + ":" + dot_.op_id());
  }

 private:
  int64_t in_, out_;
  QuantizedDot dot_;
  Param kernel_;
  std::unique_ptr<Param> bias_;
  Tensor input_;  // (M, in), kept by a training forward
};

class Conv2D final : public Module {
 public:
  Conv2D(std::string path, const ConvDesc& g, bool bias, uint64_t seed)
      : Module(std::move(path)), geometry_(g), conv_(this->path()) {
    kernel_.name = ChildPath("kernel");
    kernel_.value = LecunNormal({g.kh, g.kw, g.c, g.o}, g.kh * g.kw * g.c, seed, kernel_.name);
    kernel_.accumulates = false;
    kernel_.grad = Tensor::Zeros(DType::kF32, kernel_.value.shape());
    if (bias) {
      bias_ = std::make_unique<Param>();
      bias_->name = ChildPath("bias");
      bias_->value = Tensor::Zeros(DType::kF32, {g.o});
      bias_->grad = Tensor::Zeros(DType::kF32, {g.o});
    }
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckInput(path(), x, geometry_.c, 4));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, conv_.Forward(ctx, x, kernel_.value));
    if (bias_) {
      AddBias(y, bias_->value);
    }
    kept_ = ctx.training;
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (!kept_) {
      return NoForwardError(path());
    }
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients grads, conv_.Backward(ctx, dy));
    kernel_.grad = std::move(grads.dw);
    if (bias_) {
      AccumulateBiasGrad(dy, bias_->grad);
    }
    kept_ = false;
    return std::move(grads.dx);
  }

  void CollectParams(std::vector<Param*>* out) override {
    out->push_back(&kernel_);
    if (bias_) {
      out->push_back(bias_.get());
    }
  }
  absl::Status PlanOps(const CompiledRules* rules) override {
    QConvConfig g;
    g.stride_h = geometry_.stride_h;
    g.stride_w = geometry_.stride_w;
    g.pad_top = geometry_.pad_top;
    g.pad_left = geometry_.pad_left;
    g.pad_bottom = geometry_.pad_bottom;
    g.pad_right = geometry_.pad_right;
    return conv_.Plan(rules, g);
  }
  void ReportOps(std::vector<std::pair<int, std::string>>* out) override {
    out->emplace_back(conv_.rule_index(), path() + ":" + QuantizedConv::kOpId);
  }
  void SetInputGradNeeded(bool needed) override { conv_.set_skip_dx(!needed); }

 private:
  ConvDesc geometry_;
  QuantizedConv conv_;
  Param kernel_;
  std::unique_ptr<Param> bias_;
  bool kept_ = false;
};

}  // namespace

std::unique_ptr<Module> MakeLinear(std::string path, int64_t in, int64_t out, bool bias,
                                   uint64_t seed) {
  return std::make_unique<Linear>(std::move(path), in, out, bias, seed);
}

std::unique_ptr<Module> MakeConv2D(std::string path, const ConvDesc& geometry, bool bias,
                                   uint64_t seed) {
  return std::make_unique<Conv2D>(std::move(path), geometry, bias, seed);
}

}  // namespace qtrain::engine
