// LayerNorm, RMSNorm and Embedding: float modules with parameters (never quantized).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"

namespace qtrain::engine {
namespace {

Param MakeParam(const std::string& name, Tensor value) {
  Param p;
  p.name = name;
  p.grad = Tensor::Zeros(DType::kF32, value.shape());
  p.value = std::move(value);
  return p;
}

absl::Status CheckFeatures(const std::string& path, const Tensor& x, int64_t features) {
  if (x.dtype() != DType::kF32 || x.rank() < 2 || x.shape().back() != features) {
    return absl::InvalidArgumentError(absl::StrCat(
        "module \"", path, "\": expected f32 input with ", features,
        " features in the last axis, got ", DTypeName(x.dtype()), " ", ShapeString(x.shape())));
  }
  return absl::OkStatus();
}

class LayerNorm final : public Module {
 public:
  LayerNorm(std::string path, int64_t features, float eps)
      : Module(std::move(path)), features_(features), eps_(eps) {
    scale_ = MakeParam(ChildPath("scale"), Constant({features}, 1.0f));
    bias_ = MakeParam(ChildPath("bias"), Constant({features}, 0.0f));
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, features_));
    const int64_t rows = x.numel() / features_;
    Tensor y = Tensor::Empty(DType::kF32, x.shape());
    mean_ = Tensor::Empty(DType::kF32, {rows});
    var_ = Tensor::Empty(DType::kF32, {rows});
    QTRAIN_RETURN_IF_ERROR(ctx.backend->LayerNormFwd(
        rows, features_, eps_, x.data<float>(), scale_.value.data<float>(),
        bias_.value.data<float>(), y.data<float>(), mean_.data<float>(), var_.data<float>()));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    const int64_t rows = dy.numel() / features_;
    Tensor dx = Tensor::Empty(DType::kF32, dy.shape());
    Tensor dscale = Tensor::Empty(DType::kF32, {features_}), dbias = dscale;
    QTRAIN_RETURN_IF_ERROR(
        ctx.backend->LayerNormBwd(rows, features_, eps_, input_.data<float>(), mean_.data<float>(),
                                  var_.data<float>(), scale_.value.data<float>(), dy.data<float>(),
                                  dx.data<float>(), dscale.data<float>(), dbias.data<float>()));
    for (int64_t j = 0; j < features_; ++j) {
      scale_.grad.data<float>()[j] += dscale.data<float>()[j];
      bias_.grad.data<float>()[j] += dbias.data<float>()[j];
    }
    input_ = Tensor();
    return dx;
  }

  void CollectParams(std::vector<Param*>* out) override {
    out->push_back(&scale_);
    out->push_back(&bias_);
  }

 private:
  int64_t features_;
  float eps_;
  Param scale_, bias_;
  Tensor input_, mean_, var_;
};

// y = x / sqrt(mean(x²) + eps) · scale. oneDNN 2.6 has no RMS normalization: plain loops.
class RmsNorm final : public Module {
 public:
  RmsNorm(std::string path, int64_t features, float eps)
      : Module(std::move(path)), features_(features), eps_(eps) {
    scale_ = MakeParam(ChildPath("scale"), Constant({features}, 1.0f));
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, features_));
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

 private:
  int64_t features_;
  float eps_;
  Param scale_;
  Tensor input_, rstd_;
};

class Embedding final : public Module {
 public:
  Embedding(std::string path, int64_t num, int64_t features, uint64_t seed)
      : Module(std::move(path)), num_(num), features_(features) {
    // flax.linen.Embed: variance_scaling(1.0, "fan_in", "normal", out_axis=0) → std 1/sqrt(F).
    const std::string name = ChildPath("embedding");
    table_ = MakeParam(
        name,
        NormalInit({num, features}, 1.0f / std::sqrt(static_cast<float>(features)), seed, name));
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& ids) override {
    if (ids.dtype() != DType::kS32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "module \"", path(), "\": expected int32 token ids, got ", DTypeName(ids.dtype())));
    }
    const int32_t* p = ids.data<int32_t>();
    for (int64_t i = 0; i < ids.numel(); ++i) {
      if (p[i] < 0 || p[i] >= num_) {
        return absl::InvalidArgumentError(
            absl::StrCat("module \"", path(), "\": token id ", p[i], " at position ", i,
                         " is outside the vocabulary [0, ", num_, ")"));
      }
    }
    Shape out_shape = ids.shape();
    out_shape.push_back(features_);
    Tensor y = Tensor::Empty(DType::kF32, out_shape);
    for (int64_t i = 0; i < ids.numel(); ++i) {
      std::copy_n(table_.value.data<float>() + p[i] * features_, features_,
                  y.data<float>() + i * features_);
    }
    ids_ = ctx.training ? ids.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (ids_.empty()) {
      return NoForwardError(path());
    }
    const int32_t* p = ids_.data<int32_t>();
    for (int64_t i = 0; i < ids_.numel(); ++i) {
      float* row = table_.grad.data<float>() + p[i] * features_;
      const float* g = dy.data<float>() + i * features_;
      for (int64_t j = 0; j < features_; ++j) {
        row[j] += g[j];
      }
    }
    ids_ = Tensor();
    return Tensor();  // no gradient flows into integer ids
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&table_); }

 private:
  int64_t num_, features_;
  Param table_;
  Tensor ids_;
};

}  // namespace

std::unique_ptr<Module> MakeLayerNorm(std::string path, int64_t features, float epsilon) {
  return std::make_unique<LayerNorm>(std::move(path), features, epsilon);
}
std::unique_ptr<Module> MakeRmsNorm(std::string path, int64_t features, float epsilon) {
  return std::make_unique<RmsNorm>(std::move(path), features, epsilon);
}
std::unique_ptr<Module> MakeEmbedding(std::string path, int64_t num, int64_t features,
                                      uint64_t seed) {
  return std::make_unique<Embedding>(std::move(path), num, features, seed);
}

}  // namespace qtrain::engine
