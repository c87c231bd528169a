#include "server/store/export_onnx.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/qtype.h"
#include "kernels/status_macros.h"
#include "onnx/checker.h"
#include "onnx/defs/schema.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "server/store/export_quantized.h"
#include "server/store/import_weights.h"

namespace qtrain::store {

namespace proto = ::qtrain::v1;
namespace {

constexpr int kOpset = 17;  // LayerNormalization; QDQ with the axis attribute (13+)
constexpr int kIrVersion = 8;

using Attr = onnx::AttributeProto;

// Builds one graph: unique value names, initializers from tensors, nodes.
class Graph {
 public:
  explicit Graph(onnx::GraphProto* g) : g_(g) {}

  std::string Fresh(const std::string& base) { return absl::StrCat(base, "_", counts_[base]++); }

  // An initializer holding `t` (f32, s32 or s8), named `name` (unique by construction).
  std::string Init(const std::string& name, const Tensor& t) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(name);
    for (int64_t d : t.shape()) p->add_dims(d);
    switch (t.dtype()) {
      case DType::kS8:
        p->set_data_type(onnx::TensorProto::INT8);
        break;
      case DType::kS32:
        p->set_data_type(onnx::TensorProto::INT32);
        break;
      default:
        p->set_data_type(onnx::TensorProto::FLOAT);
    }
    p->set_raw_data(std::string(static_cast<const char*>(t.raw()), t.nbytes()));
    return name;
  }
  std::string Scalar(const std::string& name, float v) {
    return Init(Fresh(name), Tensor::FromFloats({}, {v}));
  }
  std::string ZeroPoints(const std::string& name, int64_t n) {
    return Init(Fresh(name),
                n > 0 ? Tensor::Zeros(DType::kS8, {n}) : Tensor::Zeros(DType::kS8, {}));
  }
  std::string Ints(const std::string& name, const std::vector<int64_t>& v) {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(Fresh(name));
    p->set_data_type(onnx::TensorProto::INT64);
    p->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) p->add_int64_data(x);
    return p->name();
  }

  onnx::NodeProto* Node(const std::string& op, const std::vector<std::string>& in,
                        const std::string& out_base, std::string* out) {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(Fresh(op));
    for (const std::string& i : in) n->add_input(i);
    *out = Fresh(out_base);
    n->add_output(*out);
    return n;
  }
  std::string Op(const std::string& op, const std::vector<std::string>& in,
                 const std::string& out_base) {
    std::string out;
    Node(op, in, out_base, &out);
    return out;
  }

  static void SetInt(onnx::NodeProto* n, const std::string& name, int64_t v) {
    Attr* a = n->add_attribute();
    a->set_name(name);
    a->set_type(Attr::INT);
    a->set_i(v);
  }
  static void SetFloat(onnx::NodeProto* n, const std::string& name, float v) {
    Attr* a = n->add_attribute();
    a->set_name(name);
    a->set_type(Attr::FLOAT);
    a->set_f(v);
  }
  static void SetInts(onnx::NodeProto* n, const std::string& name, const std::vector<int64_t>& v) {
    Attr* a = n->add_attribute();
    a->set_name(name);
    a->set_type(Attr::INTS);
    for (int64_t x : v) a->add_ints(x);
  }

 private:
  onnx::GraphProto* g_;
  std::map<std::string, int> counts_;
};

// Walks the spec as Model::Build names it, emitting each module's nodes; `shape` is the
// per-example shape of the current value.
class Exporter {
 public:
  Exporter(engine::Trainer& t, Graph& g) : t_(t), g_(g) {
    for (const engine::Param* p : t.model().params()) params_[p->name] = p;
    for (const auto& [rule, op] : t.model().Ops()) rule_of_[op] = rule;
  }

  absl::StatusOr<std::string> Root(const proto::Module& body, std::string x, Shape& shape) {
    if (body.has_sequential() && body.name().empty()) {
      return Sequential(body.sequential(), "", std::move(x), shape);
    }
    std::map<std::string, int> counters;
    return Module(body, "", counters, std::move(x), shape);
  }

 private:
  absl::StatusOr<std::string> Sequential(const proto::Sequential& s, const std::string& path,
                                         std::string x, Shape& shape) {
    std::map<std::string, int> counters;
    for (const proto::Module& layer : s.layers()) {
      QTRAIN_ASSIGN_OR_RETURN(x, Module(layer, path, counters, std::move(x), shape));
    }
    return x;
  }

  absl::StatusOr<std::string> Module(const proto::Module& m, const std::string& parent,
                                     std::map<std::string, int>& counters, std::string x,
                                     Shape& shape) {
    const std::string type = engine::ModuleTypeName(m);
    const std::string name =
        m.name().empty() ? absl::StrCat(type, "_", counters[type]++) : m.name();
    const std::string path = parent.empty() ? name : absl::StrCat(parent, "/", name);
    switch (m.kind_case()) {
      case proto::Module::kLinear:
        return Linear(path, std::move(x), shape);
      case proto::Module::kConv2D:
        return Conv(m.conv2d(), path, std::move(x), shape);
      case proto::Module::kEmbedding: {
        QTRAIN_ASSIGN_OR_RETURN(const engine::Param* table, Param(path, "embedding"));
        shape.push_back(table->value.dim(1));
        return g_.Op("Gather", {g_.Init(table->name, table->value), x}, name);
      }
      case proto::Module::kLayerNorm: {
        QTRAIN_ASSIGN_OR_RETURN(const engine::Param* scale, Param(path, "scale"));
        QTRAIN_ASSIGN_OR_RETURN(const engine::Param* bias, Param(path, "bias"));
        std::string out;
        onnx::NodeProto* n = g_.Node(
            "LayerNormalization",
            {x, g_.Init(scale->name, scale->value), g_.Init(bias->name, bias->value)}, name, &out);
        Graph::SetInt(n, "axis", -1);
        const float eps = m.layer_norm().epsilon();
        Graph::SetFloat(n, "epsilon", eps > 0 ? eps : 1e-6f);
        return out;
      }
      case proto::Module::kRmsNorm: {
        QTRAIN_ASSIGN_OR_RETURN(const engine::Param* scale, Param(path, "scale"));
        const float eps = m.rms_norm().epsilon() > 0 ? m.rms_norm().epsilon() : 1e-6f;
        std::string ms;
        onnx::NodeProto* n = g_.Node("ReduceMean", {g_.Op("Mul", {x, x}, name)}, name, &ms);
        Graph::SetInts(n, "axes", {-1});
        const std::string rms =
            g_.Op("Sqrt", {g_.Op("Add", {ms, g_.Scalar("eps", eps)}, name)}, name);
        return g_.Op("Mul", {g_.Op("Div", {x, rms}, name), g_.Init(scale->name, scale->value)},
                     name);
      }
      case proto::Module::kActivation:
        return Activation(m.activation().kind(), name, x);
      case proto::Module::kAttention:
        return Attention(m.attention(), path, std::move(x), shape);
      case proto::Module::kPool:
        return Pool(m.pool(), name, std::move(x), shape);
      case proto::Module::kFlatten: {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        shape = {n};
        // Feature maps a linear layer reads are flattened as PyTorch does, (c, h, w), and that
        // layer's kernel rows are exported in the same order (Weight).
        if (FlattensForLinear(path)) x = ToNchw(x, path);
        return g_.Op("Reshape", {x, g_.Ints("flat", {0, -1})}, name);
      }
      case proto::Module::kDropout:
        return x;  // inference: the identity
      case proto::Module::kSequential:
        return Sequential(m.sequential(), path, std::move(x), shape);
      case proto::Module::kResidual: {
        const proto::Module& body = m.residual().body();
        std::string y;
        if (body.has_sequential() && body.name().empty()) {
          QTRAIN_ASSIGN_OR_RETURN(y, Sequential(body.sequential(), path, x, shape));
        } else {
          std::map<std::string, int> inner;
          QTRAIN_ASSIGN_OR_RETURN(y, Module(body, path, inner, x, shape));
        }
        return g_.Op("Add", {x, y}, name);
      }
      case proto::Module::KIND_NOT_SET:
        break;
    }
    return absl::InvalidArgumentError(absl::StrCat(path, ": module has no kind"));
  }

  absl::StatusOr<const engine::Param*> Param(const std::string& path, const char* leaf) const {
    auto it = params_.find(absl::StrCat(path, "/", leaf));
    if (it == params_.end()) {
      return absl::InternalError(absl::StrCat("ONNX export: no parameter ", path, "/", leaf));
    }
    return it->second;
  }
  const engine::Param* OptionalParam(const std::string& path, const char* leaf) const {
    auto it = params_.find(absl::StrCat(path, "/", leaf));
    return it == params_.end() ? nullptr : it->second;
  }

  // The rule that quantizes `path`'s op `op_id`, or null when it runs in float.
  const engine::Rule* RuleOf(const std::string& path, const char* op_id) const {
    auto it = rule_of_.find(absl::StrCat(path, ":", op_id));
    if (it == rule_of_.end() || it->second < 0 || t_.model().rules() == nullptr) return nullptr;
    const engine::Rule& r = t_.model().rules()->rules()[it->second];
    return r.weight_qtype ? &r : nullptr;
  }

  // QuantizeLinear -> DequantizeLinear of an activation with its static scales (`stat_name` in
  // `path`'s quant_stats) — one per tensor, or a 1-D scale along the one axis they vary on (per
  // token); a Clip of the integers keeps narrower qtypes in range. `x` unchanged when the scales
  // are dynamic.
  absl::StatusOr<std::string> QdqActivation(const engine::Rule& rule, const std::string& path,
                                            const std::string& stat_name, const std::string& x) {
    auto stat = t_.quant_stats().find({path, stat_name});
    QTRAIN_ASSIGN_OR_RETURN(
        std::optional<Tensor> scales,
        StaticInputScales(rule, path, stat == t_.quant_stats().end() ? nullptr : &stat->second));
    if (!scales) return x;
    int axis = -1;
    for (int a = 0; a < scales->rank(); ++a) {
      if (scales->dim(a) == 1) continue;
      if (axis >= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, " ", stat_name, ": static scales vary over more than one axis (",
                         ShapeString(scales->shape()),
                         "), which QuantizeLinear cannot express; widen act_batch_axes"));
      }
      axis = a;
    }
    if (axis == 0) {  // the graph's batch axis is symbolic: a scale per example cannot be fixed
      return absl::InvalidArgumentError(
          absl::StrCat(path, " ", stat_name, ": static scales vary over the batch axis (",
                       ShapeString(scales->shape()), "); include axis 0 in act_batch_axes"));
    }
    Tensor s = std::move(*scales);
    s.Reshape(axis < 0 ? Shape{} : Shape{s.numel()});
    const std::string base = absl::StrCat(path, "/", stat_name);
    const std::string scale = g_.Init(g_.Fresh(base + "_scale"), s);
    const std::string zp = g_.ZeroPoints(base + "_zero_point", axis < 0 ? 0 : s.numel());
    std::string q;
    onnx::NodeProto* quantize = g_.Node("QuantizeLinear", {x, scale, zp}, base + "_q", &q);
    if (axis >= 0) Graph::SetInt(quantize, "axis", axis);
    const QTypeInfo& info = GetQTypeInfo(*rule.act_qtype);
    if (info.qmin > -128.0f || info.qmax < 127.0f) {
      q = g_.Op("Clip",
                {q, g_.Init(g_.Fresh("qmin"), Int8Scalar(info.qmin)),
                 g_.Init(g_.Fresh("qmax"), Int8Scalar(info.qmax))},
                base + "_clip");
    }
    std::string dq;
    onnx::NodeProto* dequantize = g_.Node("DequantizeLinear", {q, scale, zp}, base + "_dq", &dq);
    if (axis >= 0) Graph::SetInt(dequantize, "axis", axis);
    return dq;
  }

  static Tensor Int8Scalar(float v) {
    Tensor t = Tensor::Zeros(DType::kS8, {});
    t.data<int8_t>()[0] = static_cast<int8_t>(v);
    return t;
  }

  // The kernel as the graph uses it: float, or int8 behind DequantizeLinear. `to_oihw`: a conv
  // kernel (HWIO in the session, OIHW in ONNX; its scales on axis 0).
  absl::StatusOr<std::string> Weight(const engine::Rule* rule, const std::string& path,
                                     const engine::Param& kernel, bool to_oihw) {
    // A linear kernel after a flatten of feature maps takes its rows in (c, h, w) order.
    auto layout = [&](const Tensor& k) {
      return to_oihw ? HwioToOihw(k) : KernelInTorchOrder(t_.model(), path, k);
    };
    if (rule == nullptr) return g_.Init(kernel.name, layout(kernel.value));
    QTRAIN_ASSIGN_OR_RETURN(ExportWeight w, QuantizeWeightForExport(*rule, path, kernel.value));
    const std::string q = g_.Init(path + "/kernel_quantized", layout(w.q));
    Tensor scale = std::move(w.scale);
    if (!w.per_channel) scale.Reshape({});
    const std::string s = g_.Init(path + "/kernel_scale", scale);
    const std::string zp =
        g_.ZeroPoints(path + "/kernel_zero_point", w.per_channel ? scale.numel() : 0);
    std::string out;
    onnx::NodeProto* n = g_.Node("DequantizeLinear", {q, s, zp}, path + "/kernel_dq", &out);
    if (w.per_channel) Graph::SetInt(n, "axis", to_oihw ? 0 : 1);
    return out;
  }

  absl::StatusOr<std::string> Linear(const std::string& path, std::string x, Shape& shape) {
    QTRAIN_ASSIGN_OR_RETURN(const engine::Param* kernel, Param(path, "kernel"));
    const engine::Rule* rule = RuleOf(path, "dot_general0");
    if (rule != nullptr) {
      QTRAIN_ASSIGN_OR_RETURN(x, QdqActivation(*rule, path, "dot_general0_lhs", x));
    }
    QTRAIN_ASSIGN_OR_RETURN(std::string w, Weight(rule, path, *kernel, false));
    std::string y = g_.Op("MatMul", {x, w}, path);
    if (const engine::Param* bias = OptionalParam(path, "bias")) {
      y = g_.Op("Add", {y, g_.Init(bias->name, bias->value)}, path);
    }
    shape.back() = kernel->value.dim(1);
    return y;
  }

  // Flax's MultiHeadDotProductAttention as the server computes it: query / key / value / out
  // linear layers, the query scaled by 1/sqrt(head dim), einsum0 = q·kᵀ, the causal mask, the
  // softmax, einsum1 = attention·v; the einsums' operands through QDQ when a rule quantizes
  // them (they are activations: static scales only).
  absl::StatusOr<std::string> Attention(const proto::MultiHeadAttention& a, const std::string& path,
                                        std::string x, Shape& shape) {
    const int64_t t = shape[0], d = shape[1], heads = a.num_heads();
    const int64_t qkv = a.qkv_features() > 0 ? a.qkv_features() : d, dh = qkv / heads;
    auto project = [&](const char* name) -> absl::StatusOr<std::string> {
      Shape s = shape;
      QTRAIN_ASSIGN_OR_RETURN(std::string y, Linear(absl::StrCat(path, "/", name), x, s));
      return g_.Op("Reshape", {y, g_.Ints("heads", {0, 0, heads, dh})}, path + "/" + name);
    };
    QTRAIN_ASSIGN_OR_RETURN(std::string q, project("query"));
    QTRAIN_ASSIGN_OR_RETURN(std::string k, project("key"));
    QTRAIN_ASSIGN_OR_RETURN(std::string v, project("value"));
    q = g_.Op("Mul",
              {Transpose(q, {0, 2, 1, 3}, path + "/q"),
               g_.Scalar("query_scale", 1.0f / std::sqrt(static_cast<float>(dh)))},
              path + "/q");
    k = Transpose(k, {0, 2, 3, 1}, path + "/kt");
    v = Transpose(v, {0, 2, 1, 3}, path + "/v");
    if (const engine::Rule* rule = RuleOf(path, "einsum0")) {
      QTRAIN_ASSIGN_OR_RETURN(q, QdqActivation(*rule, path, "einsum0_lhs", q));
      QTRAIN_ASSIGN_OR_RETURN(k, QdqActivation(*rule, path, "einsum0_rhs", k));
    }
    std::string scores = g_.Op("MatMul", {q, k}, path + "/scores");
    if (a.causal()) {
      Tensor mask = Tensor::Zeros(DType::kF32, {t, t});
      for (int64_t i = 0; i < t; ++i) {
        for (int64_t j = i + 1; j < t; ++j) mask.data<float>()[i * t + j] = -1e30f;
      }
      scores = g_.Op("Add", {scores, g_.Init(path + "/causal_mask", mask)}, path + "/masked");
    }
    std::string attn;
    Graph::SetInt(g_.Node("Softmax", {scores}, path + "/softmax", &attn), "axis", -1);
    if (const engine::Rule* rule = RuleOf(path, "einsum1")) {
      QTRAIN_ASSIGN_OR_RETURN(attn, QdqActivation(*rule, path, "einsum1_lhs", attn));
      QTRAIN_ASSIGN_OR_RETURN(v, QdqActivation(*rule, path, "einsum1_rhs", v));
    }
    std::string merged =
        Transpose(g_.Op("MatMul", {attn, v}, path + "/context"), {0, 2, 1, 3}, path + "/merge");
    merged = g_.Op("Reshape", {merged, g_.Ints("merge", {0, 0, qkv})}, path + "/merge");
    Shape s = {t, qkv};
    QTRAIN_ASSIGN_OR_RETURN(std::string y, Linear(path + "/out", merged, s));
    shape = {t, d};
    return y;
  }

  absl::StatusOr<std::string> Conv(const proto::Conv2D& c, const std::string& path, std::string x,
                                   Shape& shape) {
    QTRAIN_ASSIGN_OR_RETURN(const engine::Param* kernel, Param(path, "kernel"));
    const engine::Rule* rule = RuleOf(path, "conv_general_dilated0");
    if (rule != nullptr) {
      QTRAIN_ASSIGN_OR_RETURN(x, QdqActivation(*rule, path, "conv_general_dilated0_lhs", x));
    }
    QTRAIN_ASSIGN_OR_RETURN(std::string w, Weight(rule, path, *kernel, true));
    std::vector<std::string> inputs = {ToNchw(x, path), w};
    if (const engine::Param* bias = OptionalParam(path, "bias")) {
      inputs.push_back(g_.Init(bias->name, bias->value));
    }
    const int64_t kh = kernel->value.dim(0), kw = kernel->value.dim(1);
    const int64_t sh = c.strides_size() == 2 ? c.strides(0) : 1;
    const int64_t sw = c.strides_size() == 2 ? c.strides(1) : 1;
    std::string y;
    SetWindow(g_.Node("Conv", inputs, path, &y), shape, kh, kw, sh, sw, c.padding() == proto::SAME);
    shape.back() = kernel->value.dim(3);
    return ToNhwc(y, path);
  }

  absl::StatusOr<std::string> Pool(const proto::Pool& p, const std::string& name, std::string x,
                                   Shape& shape) {
    if (p.kind() == proto::Pool::GLOBAL_AVG) {
      std::string y;
      onnx::NodeProto* n = g_.Node("ReduceMean", {x}, name, &y);
      Graph::SetInts(n, "axes", {1, 2});
      Graph::SetInt(n, "keepdims", 0);
      shape = {shape[2]};
      return y;
    }
    const int64_t kh = p.window(0), kw = p.window(1);
    const int64_t sh = p.strides_size() == 2 ? p.strides(0) : kh;
    const int64_t sw = p.strides_size() == 2 ? p.strides(1) : kw;
    const bool same = p.padding() == proto::SAME;
    std::string y;
    // Averages exclude the padding (AveragePool's default), as the server's do.
    SetWindow(g_.Node(p.kind() == proto::Pool::MAX ? "MaxPool" : "AveragePool", {ToNchw(x, name)},
                      name, &y),
              shape, kh, kw, sh, sw, same);
    return ToNhwc(y, name);
  }

  // A convolution's or pool's window, strides and padding, as the server pads; `shape` (H, W, C)
  // becomes the output's, channels unchanged.
  static void SetWindow(onnx::NodeProto* n, Shape& shape, int64_t kh, int64_t kw, int64_t sh,
                        int64_t sw, bool same) {
    const auto [top, bottom] = engine::WindowPadding(shape[0], kh, sh, same);
    const auto [left, right] = engine::WindowPadding(shape[1], kw, sw, same);
    Graph::SetInts(n, "kernel_shape", {kh, kw});
    Graph::SetInts(n, "strides", {sh, sw});
    Graph::SetInts(n, "pads", {top, left, bottom, right});
    shape[0] = (shape[0] + top + bottom - kh) / sh + 1;
    shape[1] = (shape[1] + left + right - kw) / sw + 1;
  }

  bool FlattensForLinear(const std::string& flatten_path) const {
    for (const auto& [linear, in] : t_.model().flattened_inputs()) {
      if (in.flatten_path == flatten_path) return true;
    }
    return false;
  }

  std::string Transpose(const std::string& x, const std::vector<int64_t>& perm,
                        const std::string& base) {
    std::string y;
    Graph::SetInts(g_.Node("Transpose", {x}, base, &y), "perm", perm);
    return y;
  }
  std::string ToNchw(const std::string& x, const std::string& base) {
    return Transpose(x, {0, 3, 1, 2}, base + "/nchw");
  }
  std::string ToNhwc(const std::string& x, const std::string& base) {
    return Transpose(x, {0, 2, 3, 1}, base + "/nhwc");
  }

  std::string Activation(proto::Activation::Kind kind, const std::string& name,
                         const std::string& x) {
    switch (kind) {
      case proto::Activation::RELU:
        return g_.Op("Relu", {x}, name);
      case proto::Activation::TANH:
        return g_.Op("Tanh", {x}, name);
      case proto::Activation::SILU:
        return g_.Op("Mul", {x, g_.Op("Sigmoid", {x}, name)}, name);
      case proto::Activation::RELU6:
        return g_.Op("Clip", {x, g_.Scalar("zero", 0.0f), g_.Scalar("six", 6.0f)}, name);
      case proto::Activation::HARD_SWISH:
        return g_.Op("HardSwish", {x}, name);
      case proto::Activation::SIGMOID:
        return g_.Op("Sigmoid", {x}, name);
      case proto::Activation::GELU_EXACT: {
        // 0.5 x (1 + erf(x / sqrt(2))); opset 17 has no Gelu.
        const std::string e = g_.Op(
            "Erf", {g_.Op("Mul", {x, g_.Scalar("inv_sqrt2", 0.7071067811865476f)}, name)}, name);
        const std::string t = g_.Op("Add", {e, g_.Scalar("one", 1.0f)}, name);
        return g_.Op("Mul", {g_.Op("Mul", {x, t}, name), g_.Scalar("half", 0.5f)}, name);
      }
      case proto::Activation::GELU:
      default: {
        // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), flax.linen.gelu's tanh form.
        const std::string x3 = g_.Op("Mul", {g_.Op("Mul", {x, x}, name), x}, name);
        const std::string inner = g_.Op(
            "Mul",
            {g_.Op("Add", {x, g_.Op("Mul", {x3, g_.Scalar("gelu_a", 0.044715f)}, name)}, name),
             g_.Scalar("gelu_c", 0.7978845608028654f)},
            name);
        const std::string t =
            g_.Op("Add", {g_.Op("Tanh", {inner}, name), g_.Scalar("one", 1.0f)}, name);
        return g_.Op("Mul", {g_.Op("Mul", {x, t}, name), g_.Scalar("half", 0.5f)}, name);
      }
    }
  }

  engine::Trainer& t_;
  Graph& g_;
  std::map<std::string, const engine::Param*> params_;
  std::map<std::string, int> rule_of_;  // "path:op_id" -> rule index (-1: float)
};

void SetValueInfo(onnx::ValueInfoProto* v, const std::string& name, int elem_type,
                  const Shape& per_example) {
  v->set_name(name);
  onnx::TypeProto_Tensor* t = v->mutable_type()->mutable_tensor_type();
  t->set_elem_type(elem_type);
  t->mutable_shape()->add_dim()->set_dim_param("batch");
  for (int64_t d : per_example) t->mutable_shape()->add_dim()->set_dim_value(d);
}

}  // namespace

absl::StatusOr<std::string> ExportOnnx(engine::Trainer& trainer, const std::string& session_id) {
  const proto::ModelSpec& spec = trainer.model().spec();
  onnx::ModelProto model;
  model.set_ir_version(kIrVersion);
  model.set_producer_name("qtrain");
  model.set_producer_version(QTRAIN_VERSION);
  onnx::OperatorSetIdProto* opset = model.add_opset_import();
  opset->set_domain("");
  opset->set_version(kOpset);
  onnx::GraphProto* g = model.mutable_graph();
  g->set_name(spec.name().empty() ? "qtrain" : spec.name());
  const bool tokens = spec.input().kind() == proto::InputSpec::TOKENS;
  Shape shape(spec.input().shape().begin(), spec.input().shape().end());
  SetValueInfo(g->add_input(), "input",
               tokens ? onnx::TensorProto::INT32 : onnx::TensorProto::FLOAT, shape);
  Graph graph(g);
  Exporter exporter(trainer, graph);
  QTRAIN_ASSIGN_OR_RETURN(std::string out, exporter.Root(spec.body(), "input", shape));
  std::string logits;
  graph.Node("Identity", {out}, "identity", &logits)->set_output(0, "logits");
  SetValueInfo(g->add_output(), "logits", onnx::TensorProto::FLOAT, shape);
  for (const auto& [key, value] :
       {std::pair<std::string, std::string>{"qtrain.session", session_id},
        {"qtrain.step", absl::StrCat(trainer.step())}}) {
    onnx::StringStringEntryProto* p = model.add_metadata_props();
    p->set_key(key);
    p->set_value(value);
  }
  try {
    onnx::checker::check_model(model);
    onnx::ShapeInferenceOptions options{/*check_type=*/true, /*error_mode=*/1};
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    return absl::InternalError(
        absl::StrCat("the ONNX export failed ONNX's checker (a qtrain bug): ", e.what()));
  }
  // Protobuf messages stop at 2 GiB; ONNX's external-data form is not written.
  if (model.ByteSizeLong() > static_cast<size_t>(INT32_MAX)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the ONNX model would be ", model.ByteSizeLong(),
        " bytes; protobuf (and so ONNX without external data, which qtrain does not write) "
        "stops at 2 GiB — export compressed-tensors instead"));
  }
  std::string bytes;
  if (!model.SerializeToString(&bytes)) {
    return absl::InternalError("the ONNX model did not serialize");
  }
  return bytes;
}

}  // namespace qtrain::store
