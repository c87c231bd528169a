// Model::Build: proto ModelSpec → module tree, with per-example shape inference so that shape
// mistakes surface when the session is created, naming the module path.
#include <cmath>
#include <iterator>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/model.h"

namespace qtrain::engine {
namespace {

class Builder {
 public:
  // `dry_run`: shape inference and limits only; parameterised modules are not allocated (their
  // places in the tree stay null), so Estimate costs nothing however large the spec.
  Builder(uint64_t seed, bool dry_run) : seed_(seed), dry_run_(dry_run) {}

  // Builds `m` as a child of `parent` (Linen naming), mapping the per-example `shape`.
  absl::StatusOr<std::unique_ptr<Module>> Build(const proto::Module& m, const std::string& parent,
                                                std::map<std::string, int>& counters, Shape& shape,
                                                int depth) {
    if (depth > kMaxDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("module tree deeper than ", kMaxDepth, " at \"", parent, "\""));
    }
    if (++modules_ > kMaxModules) {
      return absl::InvalidArgumentError(absl::StrCat("the model spec has more than ", kMaxModules,
                                                     " modules (at \"", parent, "\")"));
    }
    const std::string type = TypeName(m);
    if (type.empty()) {
      const std::string which =
          m.name().empty() ? absl::StrCat("a module under \"", parent, "\"")
                           : absl::StrCat("module \"", m.name(), "\" under \"", parent, "\"");
      return absl::InvalidArgumentError(absl::StrCat(
          which,
          " has no kind (set one of linear, conv2d, embedding, "
          "layer_norm, rms_norm, activation, attention, pool, flatten, dropout, sequential, "
          "residual)"));
    }
    std::string name = m.name();
    if (name.empty()) {
      name = absl::StrCat(type, "_", counters[type]++);
    }
    if (name.find('/') != std::string::npos || name.find(':') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("module name \"", name, "\" under \"", parent, "\" contains '/' or ':'"));
    }
    const std::string path = parent.empty() ? name : parent + "/" + name;
    // Paths name parameters, optimizer slots and statistics: they must be unique.
    if (!paths_.insert(path).second) {
      return absl::InvalidArgumentError(absl::StrCat("module path \"", path,
                                                     "\" is used twice; give modules distinct "
                                                     "names"));
    }
    if (m.kind_case() == proto::Module::kResidual) pending_flatten_.reset();
    const Shape in = shape;
    QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> module, BuildKind(m, path, shape, depth));
    NoteFlatten(m, path, in);
    if (NumElements(shape) > kMaxExampleActivation) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "module \"", path, "\" outputs ", NumElements(shape), " elements per example (shape ",
          ShapeString(shape), "); the limit is ", kMaxExampleActivation));
    }
    activations_ += NumElements(shape);  // < kMaxDepth-bounded sums of values < 2^26 each
    return module;
  }

  int64_t parameters() const { return parameters_; }
  int64_t activations() const { return activations_; }
  std::map<std::string, FlattenedInput> TakeFlattenedInputs() {
    return std::move(flattened_inputs_);
  }
  bool tokens() const { return tokens_; }

 private:
  static std::string TypeName(const proto::Module& m) { return ModuleTypeName(m); }

  // Tracks which linear layer reads a flatten of feature maps (FlattenedInput), in build order,
  // which is execution order: a flatten of (H, W, C) stays pending through activations,
  // dropout and sequential containers until a linear takes it; anything else drops it.
  void NoteFlatten(const proto::Module& m, const std::string& path, const Shape& in) {
    switch (m.kind_case()) {
      case proto::Module::kFlatten:
        pending_flatten_.reset();
        if (in.size() == 3 && in[2] > 1 && in[0] * in[1] > 1) {
          pending_flatten_ = FlattenedInput{path, in};
        }
        return;
      case proto::Module::kActivation:
      case proto::Module::kDropout:
      case proto::Module::kSequential:
        return;
      case proto::Module::kLinear:
        if (pending_flatten_) flattened_inputs_[path] = *pending_flatten_;
        pending_flatten_.reset();
        return;
      default:
        pending_flatten_.reset();
    }
  }

  // A parameterised module, or null in a dry run.
  template <typename Make>
  std::unique_ptr<Module> Allocate(Make make) {
    if (dry_run_) return nullptr;
    return make();
  }

  static absl::Status Bad(const std::string& path, absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("module \"", path, "\": ", what));
  }

  absl::Status CheckSize(const std::string& path, const char* field, int64_t v) {
    if (v <= 0 || v > kMaxDim) {
      return Bad(path, absl::StrCat(field, " = ", v, " must be in [1, ", kMaxDim, "]"));
    }
    return absl::OkStatus();
  }

  // `factors` multiply to the parameter count; overflow counts as over the limit.
  absl::Status AddParameters(const std::string& path, std::initializer_list<int64_t> factors,
                             int64_t extra = 0) {
    int64_t n = 1;
    bool overflow = false;
    for (int64_t f : factors) {
      overflow |= __builtin_mul_overflow(n, f, &n);
    }
    overflow |= __builtin_add_overflow(n, extra, &n) || __builtin_add_overflow(parameters_, n, &n);
    if (overflow) {
      n = kMaxParameters + 1;
    } else {
      n -= parameters_;
    }
    parameters_ += n;
    if (parameters_ > kMaxParameters) {
      return absl::ResourceExhaustedError(absl::StrCat("module \"", path, "\" brings the model to ",
                                                       parameters_, " parameters; the limit is ",
                                                       kMaxParameters));
    }
    return absl::OkStatus();
  }

  // SAME / VALID padding of one spatial axis (JAX convention: extra padding at the end).

  // Window, strides and SAME / VALID padding of a convolution or pooling descriptor (ConvDesc
  // or PoolDesc, whose h and w are set), each size checked.
  template <typename Desc>
  absl::Status SetWindow(const std::string& path, const char* field, int64_t kh, int64_t kw,
                         int64_t sh, int64_t sw, bool same, Desc& d) {
    for (int64_t v : {kh, kw}) QTRAIN_RETURN_IF_ERROR(CheckSize(path, field, v));
    for (int64_t v : {sh, sw}) QTRAIN_RETURN_IF_ERROR(CheckSize(path, "strides", v));
    d.kh = kh;
    d.kw = kw;
    d.stride_h = sh;
    d.stride_w = sw;
    std::tie(d.pad_top, d.pad_bottom) = WindowPadding(d.h, kh, sh, same);
    std::tie(d.pad_left, d.pad_right) = WindowPadding(d.w, kw, sw, same);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Module>> BuildKind(const proto::Module& m, const std::string& path,
                                                    Shape& shape, int depth) {
    switch (m.kind_case()) {
      case proto::Module::kLinear: {
        const auto& l = m.linear();
        if (shape.empty()) {
          return Bad(path, "linear needs an input with a feature axis");
        }
        QTRAIN_RETURN_IF_ERROR(CheckSize(path, "features", l.features()));
        const int64_t in = shape.back();
        QTRAIN_RETURN_IF_ERROR(AddParameters(path, {in, l.features()}, l.features()));
        shape.back() = l.features();
        return Allocate([&] { return MakeLinear(path, in, l.features(), !l.no_bias(), seed_); });
      }
      case proto::Module::kConv2D: {
        const auto& c = m.conv2d();
        if (shape.size() != 3) {
          return Bad(path,
                     absl::StrCat("conv2d needs (H, W, C) examples, got ", ShapeString(shape),
                                  " (a flatten before it, or an input shape without channels?)"));
        }
        QTRAIN_RETURN_IF_ERROR(CheckSize(path, "features", c.features()));
        if (c.kernel_size_size() != 2) {
          return Bad(path, "kernel_size must be [kh, kw]");
        }
        if (c.strides_size() != 0 && c.strides_size() != 2) {
          return Bad(path, "strides must be [sh, sw] or unset");
        }
        if (!proto::Padding_IsValid(c.padding())) {
          return Bad(path, absl::StrCat("unknown padding ", c.padding(), " (SAME = 0, VALID = 1)"));
        }
        ConvDesc d;
        d.n = 1;
        d.h = shape[0];
        d.w = shape[1];
        d.c = shape[2];
        d.o = c.features();
        QTRAIN_RETURN_IF_ERROR(SetWindow(path, "kernel_size", c.kernel_size(0), c.kernel_size(1),
                                         c.strides_size() ? c.strides(0) : 1,
                                         c.strides_size() ? c.strides(1) : 1,
                                         c.padding() == proto::SAME, d));
        absl::Status valid = ValidateConvDesc(d);
        if (!valid.ok()) {
          return Bad(path, valid.message());
        }
        QTRAIN_RETURN_IF_ERROR(AddParameters(path, {d.kh, d.kw, d.c, d.o}, d.o));
        shape = {d.out_h(), d.out_w(), d.o};
        return Allocate([&] { return MakeConv2D(path, d, !c.no_bias(), seed_); });
      }
      case proto::Module::kEmbedding: {
        const auto& e = m.embedding();
        QTRAIN_RETURN_IF_ERROR(CheckSize(path, "num_embeddings", e.num_embeddings()));
        QTRAIN_RETURN_IF_ERROR(CheckSize(path, "features", e.features()));
        if (!tokens_) {
          return Bad(path, "embedding needs TOKENS input (input.kind)");
        }
        QTRAIN_RETURN_IF_ERROR(AddParameters(path, {e.num_embeddings(), e.features()}));
        shape.push_back(e.features());
        tokens_ = false;
        return Allocate(
            [&] { return MakeEmbedding(path, e.num_embeddings(), e.features(), seed_); });
      }
      case proto::Module::kLayerNorm:
      case proto::Module::kRmsNorm: {
        if (shape.empty()) {
          return Bad(path, "normalization needs a feature axis");
        }
        const bool ln = m.kind_case() == proto::Module::kLayerNorm;
        const float eps = ln ? m.layer_norm().epsilon() : m.rms_norm().epsilon();
        if (eps < 0 || !std::isfinite(eps)) {
          return Bad(path, "epsilon must be >= 0");
        }
        QTRAIN_RETURN_IF_ERROR(AddParameters(path, {2, shape.back()}));
        const float e = eps > 0 ? eps : 1e-6f;
        return Allocate([&] {
          return ln ? MakeLayerNorm(path, shape.back(), e) : MakeRmsNorm(path, shape.back(), e);
        });
      }
      case proto::Module::kActivation: {
        static const EltwiseKind kKinds[] = {EltwiseKind::kRelu,    EltwiseKind::kGeluTanh,
                                             EltwiseKind::kSilu,    EltwiseKind::kTanh,
                                             EltwiseKind::kRelu6,   EltwiseKind::kHardSwish,
                                             EltwiseKind::kSigmoid, EltwiseKind::kGeluErf};
        const int k = m.activation().kind();
        if (k < 0 || k >= static_cast<int>(std::size(kKinds))) {
          return Bad(path, absl::StrCat("unknown activation kind ", k,
                                        " (RELU = 0, GELU = 1, SILU = 2, TANH = 3, RELU6 = 4, "
                                        "HARD_SWISH = 5, SIGMOID = 6, GELU_EXACT = 7)"));
        }
        return MakeActivation(path, kKinds[k]);
      }
      case proto::Module::kAttention: {
        const auto& a = m.attention();
        if (shape.size() != 2) {
          return Bad(path,
                     absl::StrCat("attention needs (T, D) examples, got ", ShapeString(shape)));
        }
        const int64_t d = shape[1];
        const int64_t qkv = a.qkv_features() ? a.qkv_features() : d;
        QTRAIN_RETURN_IF_ERROR(CheckSize(path, "num_heads", a.num_heads()));
        QTRAIN_RETURN_IF_ERROR(CheckSize(path, "qkv_features", qkv));
        if (qkv % a.num_heads() != 0) {
          return Bad(path, absl::StrCat("qkv_features ", qkv, " is not divisible by num_heads ",
                                        a.num_heads()));
        }
        QTRAIN_RETURN_IF_ERROR(AddParameters(path, {4, d, qkv}, 3 * qkv + d));
        // The (heads, T, T) attention scores are the largest activation of the block.
        const int64_t t = shape[0];
        if (a.num_heads() * t > kMaxExampleActivation / t) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "module \"", path, "\": attention scores of ", a.num_heads(), " x ", t, " x ", t,
              " per example exceed the limit of ", kMaxExampleActivation, " elements"));
        }
        activations_ += a.num_heads() * t * t;
        return Allocate(
            [&] { return MakeAttention(path, d, a.num_heads(), qkv, a.causal(), t, seed_); });
      }
      case proto::Module::kPool: {
        const auto& p = m.pool();
        if (!proto::Pool::Kind_IsValid(p.kind())) {
          return Bad(path, absl::StrCat("unknown pool kind ", p.kind(),
                                        " (MAX = 0, AVG = 1, GLOBAL_AVG = 2)"));
        }
        if (!proto::Padding_IsValid(p.padding())) {
          return Bad(path, absl::StrCat("unknown padding ", p.padding(), " (SAME = 0, VALID = 1)"));
        }
        if (shape.size() != 3) {
          return Bad(path, absl::StrCat("pool needs (H, W, C) examples, got ", ShapeString(shape)));
        }
        if (p.kind() == proto::Pool::GLOBAL_AVG) {
          shape = {shape[2]};
          return MakePool(path, PoolDesc{}, true);
        }
        if (p.window_size() != 2) {
          return Bad(path, "window must be [wh, ww]");
        }
        PoolDesc d;
        d.max = p.kind() == proto::Pool::MAX;
        d.h = shape[0];
        d.w = shape[1];
        d.c = shape[2];
        d.n = 1;
        QTRAIN_RETURN_IF_ERROR(SetWindow(path, "window", p.window(0), p.window(1),
                                         p.strides_size() == 2 ? p.strides(0) : p.window(0),
                                         p.strides_size() == 2 ? p.strides(1) : p.window(1),
                                         p.padding() == proto::SAME, d));
        absl::Status valid = ValidatePoolDesc(d);
        if (!valid.ok()) {
          return Bad(path, valid.message());
        }
        shape = {d.out_h(), d.out_w(), d.c};
        return MakePool(path, d, false);
      }
      case proto::Module::kFlatten:
        shape = {NumElements(shape)};
        return MakeFlatten(path);
      case proto::Module::kDropout: {
        const float r = m.dropout().rate();
        if (!(r >= 0.0f && r < 1.0f)) {
          return Bad(path, absl::StrCat("dropout rate ", r, " must be in [0, 1)"));
        }
        return MakeDropout(path, r);
      }
      case proto::Module::kSequential:
        return BuildSequential(m.sequential(), path, shape, depth);
      case proto::Module::kResidual: {
        if (!m.residual().has_body()) {
          return Bad(path, "residual needs a body");
        }
        const Shape in = shape;
        std::unique_ptr<Module> body;
        if (m.residual().body().has_sequential() && m.residual().body().name().empty()) {
          // An unnamed Sequential body is transparent: its layers live under the residual.
          QTRAIN_ASSIGN_OR_RETURN(
              body, BuildSequential(m.residual().body().sequential(), path, shape, depth));
        } else {
          std::map<std::string, int> counters;
          QTRAIN_ASSIGN_OR_RETURN(body,
                                  Build(m.residual().body(), path, counters, shape, depth + 1));
        }
        if (shape != in) {
          return Bad(path, absl::StrCat("residual body maps ", ShapeString(in), " to ",
                                        ShapeString(shape)));
        }
        return MakeResidual(path, std::move(body));
      }
      case proto::Module::KIND_NOT_SET:
        break;
    }
    return Bad(path, "no kind");
  }

 public:
  absl::StatusOr<std::unique_ptr<Module>> BuildSequential(const proto::Sequential& s,
                                                          const std::string& path, Shape& shape,
                                                          int depth) {
    std::vector<std::unique_ptr<Module>> layers;
    std::map<std::string, int> counters;
    for (const proto::Module& layer : s.layers()) {
      QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> m,
                              Build(layer, path, counters, shape, depth + 1));
      layers.push_back(std::move(m));
    }
    return MakeSequential(path, std::move(layers));
  }

  void set_tokens(bool tokens) { tokens_ = tokens; }

 private:
  uint64_t seed_;
  bool dry_run_;
  std::set<std::string> paths_;
  int64_t parameters_ = 0;
  int64_t activations_ = 0;
  int modules_ = 0;
  bool tokens_ = false;  // the current activation is still token ids
  std::optional<FlattenedInput> pending_flatten_;
  std::map<std::string, FlattenedInput> flattened_inputs_;
};

}  // namespace

namespace {

// Validates `spec` and builds its module tree with `builder`; the per-example output shape goes
// to `shape`.
absl::StatusOr<std::unique_ptr<Module>> BuildTree(const proto::ModelSpec& spec, Builder& builder,
                                                  Shape& shape) {
  if (spec.input().shape_size() == 0) {
    return absl::InvalidArgumentError("model spec: input.shape is empty (e.g. [784])");
  }
  // Enums arrive as plain integers on the wire: an unknown value must not fall through to a
  // default in one place and be read differently in another.
  if (!proto::InputSpec::Kind_IsValid(spec.input().kind())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model spec: unknown input.kind ", spec.input().kind(), " (FLOAT = 0, TOKENS = 1)"));
  }
  if (!proto::Loss::Kind_IsValid(spec.loss().kind())) {
    return absl::InvalidArgumentError(absl::StrCat("model spec: unknown loss.kind ",
                                                   spec.loss().kind(),
                                                   " (SOFTMAX_CROSS_ENTROPY = 0, MSE = 1)"));
  }
  shape.assign(spec.input().shape().begin(), spec.input().shape().end());
  for (int64_t d : shape) {
    if (d <= 0 || d > kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("model spec: input.shape ", ShapeString(shape),
                                                     " needs dims in [1, ", kMaxDim, "]"));
    }
  }
  if (NumElements(shape) > kMaxExampleActivation) {
    return absl::ResourceExhaustedError(absl::StrCat("model spec: input.shape ", ShapeString(shape),
                                                     " has more than ", kMaxExampleActivation,
                                                     " elements per example"));
  }
  if (!spec.has_body()) {
    return absl::InvalidArgumentError("model spec: body is not set");
  }
  builder.set_tokens(spec.input().kind() == proto::InputSpec::TOKENS);
  std::unique_ptr<Module> root;
  // The root body is transparent: its children are named at the top level (Dense_0, ...).
  if (spec.body().has_sequential() && spec.body().name().empty()) {
    QTRAIN_ASSIGN_OR_RETURN(root, builder.BuildSequential(spec.body().sequential(), "", shape, 0));
  } else {
    std::map<std::string, int> counters;
    QTRAIN_ASSIGN_OR_RETURN(root, builder.Build(spec.body(), "", counters, shape, 0));
  }
  if (builder.tokens()) {
    return absl::InvalidArgumentError(
        "model spec: TOKENS input needs an embedding before any other computation");
  }
  if (spec.loss().kind() == proto::Loss::SOFTMAX_CROSS_ENTROPY && shape.empty()) {
    return absl::InvalidArgumentError("model spec: cross-entropy needs a class axis in the output");
  }
  return root;
}

}  // namespace

std::pair<int64_t, int64_t> WindowPadding(int64_t in, int64_t k, int64_t s, bool same) {
  if (!same) {
    return {0, 0};
  }
  const int64_t out = (in + s - 1) / s;
  const int64_t total = std::max<int64_t>((out - 1) * s + k - in, 0);
  return {total / 2, total - total / 2};
}

std::string ModuleTypeName(const proto::Module& m) {
  switch (m.kind_case()) {
    case proto::Module::kLinear:
      return "Dense";
    case proto::Module::kConv2D:
      return "Conv";
    case proto::Module::kEmbedding:
      return "Embed";
    case proto::Module::kLayerNorm:
      return "LayerNorm";
    case proto::Module::kRmsNorm:
      return "RMSNorm";
    case proto::Module::kActivation:
      return "Activation";
    case proto::Module::kAttention:
      return "MultiHeadAttention";
    case proto::Module::kPool:
      return "Pool";
    case proto::Module::kFlatten:
      return "Flatten";
    case proto::Module::kDropout:
      return "Dropout";
    case proto::Module::kSequential:
      return "Sequential";
    case proto::Module::kResidual:
      return "Residual";
    case proto::Module::KIND_NOT_SET:
      break;
  }
  return "";
}

absl::StatusOr<ModelFootprint> Model::Estimate(const proto::ModelSpec& spec) {
  Builder builder(/*seed=*/0, /*dry_run=*/true);
  Shape shape;
  QTRAIN_RETURN_IF_ERROR(BuildTree(spec, builder, shape).status());
  ModelFootprint f;
  f.parameters = builder.parameters();
  f.activations_per_example =
      NumElements(Shape(spec.input().shape().begin(), spec.input().shape().end())) +
      builder.activations();
  return f;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Build(const proto::ModelSpec& spec, uint64_t seed) {
  Builder builder(seed, /*dry_run=*/false);
  auto model = std::unique_ptr<Model>(new Model());
  model->spec_ = spec;
  QTRAIN_ASSIGN_OR_RETURN(model->root_, BuildTree(spec, builder, model->output_shape_));
  model->flattened_inputs_ = builder.TakeFlattenedInputs();
  model->root_->CollectParams(&model->params_);
  QTRAIN_RETURN_IF_ERROR(model->SetRules(nullptr));
  return model;
}

}  // namespace qtrain::engine
