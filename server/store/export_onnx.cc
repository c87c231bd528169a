#include "server/store/export_onnx.h"

#include <climits>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend/reference_ops.h"
#include "kernels/qtype.h"
#include "kernels/status_macros.h"
#include "onnx/checker.h"
#include "onnx/defs/schema.h"
#include "onnx/onnx_pb.h"
#include "onnx/shape_inference/implementation.h"
#include "server/engine/onnx_graph.h"
#include "server/store/export_quantized.h"
#include "server/store/import_weights.h"

namespace qtrain::store {

namespace proto = ::qtrain::v1;
namespace {

constexpr int kOpset = 17;  // LayerNormalization; QDQ with the axis attribute (13+)
constexpr int kIrVersion = 8;

// Builds one graph (unique value names, initializers from tensors, nodes) for the modules'
// ExportOnnx, with the rules, static scales and weights of the trainer's session.
class Writer final : public engine::OnnxGraph {
 public:
  Writer(engine::Trainer& t, onnx::GraphProto* g) : t_(t), g_(g) {
    for (const auto& [rule, op] : t.model().Ops()) rule_of_[op] = rule;
  }

  std::string Op(const std::string& op, const std::vector<std::string>& in, const std::string& base,
                 const std::vector<Attr>& attrs) override {
    onnx::NodeProto* n = g_->add_node();
    n->set_op_type(op);
    n->set_name(Fresh(op));
    for (const std::string& i : in) n->add_input(i);
    const std::string out = Fresh(base);
    n->add_output(out);
    for (const Attr& a : attrs) {
      onnx::AttributeProto* p = n->add_attribute();
      p->set_name(a.name);
      switch (a.type) {
        case Attr::Type::kInt:
          p->set_type(onnx::AttributeProto::INT);
          p->set_i(a.ints.at(0));
          break;
        case Attr::Type::kInts:
          p->set_type(onnx::AttributeProto::INTS);
          for (int64_t x : a.ints) p->add_ints(x);
          break;
        case Attr::Type::kFloat:
          p->set_type(onnx::AttributeProto::FLOAT);
          p->set_f(a.f);
          break;
      }
    }
    return out;
  }

  std::string Constant(const std::string& base, const Tensor& t) override {
    return Init(Fresh(base), t);
  }

  std::string Ints(const std::string& base, const std::vector<int64_t>& v) override {
    onnx::TensorProto* p = g_->add_initializer();
    p->set_name(Fresh(base));
    p->set_data_type(onnx::TensorProto::INT64);
    p->add_dims(static_cast<int64_t>(v.size()));
    for (int64_t x : v) p->add_int64_data(x);
    return p->name();
  }

  std::string Param(const engine::Param& p) override { return Init(p.name, p.value); }
  Tensor Transposed(const Tensor& device_value) override {
    const Tensor value = Host(device_value);
    if (value.empty()) return value;
    Tensor t = Tensor::Empty(DType::kF32, {value.dim(1), value.dim(0)});
    reference::Transpose(value.dim(0), value.dim(1), value.data<float>(), t.data<float>());
    return t;
  }
  // The first error of a parameter's copy to the host (the graph interface returns names).
  const absl::Status& status() const { return status_; }

  absl::StatusOr<std::string> Weight(const std::string& path, const std::string& op_id,
                                     const engine::Param& kernel, KernelLayout layout) override {
    const bool to_oihw = layout == KernelLayout::kConv;
    // A linear kernel after a flatten of feature maps takes its rows in (c, h, w) order.
    auto arrange = [&](const Tensor& k) {
      return to_oihw ? HwioToOihw(k) : KernelInTorchOrder(t_.model(), path, k);
    };
    const engine::Rule* rule = RuleOf(path, op_id);
    QTRAIN_ASSIGN_OR_RETURN(const Tensor value, t_.OnHost(kernel.value));
    if (rule == nullptr) return Init(kernel.name, arrange(value));
    QTRAIN_ASSIGN_OR_RETURN(ExportWeight w, QuantizeWeightForExport(*rule, path, value));
    if (w.group > 0) {  // DequantizeLinear's block_size needs opset 21
      return absl::InvalidArgumentError(absl::StrCat(
          path,
          ": tiled weight scales are not exported to ONNX (opset 17); use compressed-tensors"));
    }
    const std::string q = Init(path + "/kernel_quantized", arrange(w.q));
    Tensor scale = std::move(w.scale);
    if (!w.per_channel) scale.Reshape({});
    const std::string s = Init(path + "/kernel_scale", scale);
    const std::string zp =
        ZeroPoints(path + "/kernel_zero_point", w.per_channel ? scale.numel() : 0);
    std::vector<Attr> attrs;
    if (w.per_channel) attrs.push_back(IntAttr("axis", to_oihw ? 0 : 1));
    return Op("DequantizeLinear", {q, s, zp}, path + "/kernel_dq", attrs);
  }

  // One scale per tensor, or a 1-D scale along the one axis they vary on (per token); a Clip of
  // the integers keeps narrower qtypes in range.
  absl::StatusOr<std::string> QdqActivation(const std::string& path, const std::string& op_id,
                                            const std::string& stat_name,
                                            const std::string& x) override {
    const engine::Rule* rule = RuleOf(path, op_id);
    if (rule == nullptr) return x;
    auto stat = t_.quant_stats().find({path, stat_name});
    QTRAIN_ASSIGN_OR_RETURN(
        std::optional<Tensor> scales,
        StaticInputScales(*rule, path, stat == t_.quant_stats().end() ? nullptr : &stat->second));
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
    const std::string scale = Constant(base + "_scale", s);
    const std::string zp = ZeroPoints(base + "_zero_point", axis < 0 ? 0 : s.numel());
    std::vector<Attr> attrs;
    if (axis >= 0) attrs.push_back(IntAttr("axis", axis));
    std::string q = Op("QuantizeLinear", {x, scale, zp}, base + "_q", attrs);
    const QTypeInfo& info = GetQTypeInfo(*rule->act_qtype);
    if (info.qmin > -128.0f || info.qmax < 127.0f) {
      q = Op("Clip",
             {q, Constant("qmin", Int8Scalar(info.qmin)), Constant("qmax", Int8Scalar(info.qmax))},
             base + "_clip", {});
    }
    return Op("DequantizeLinear", {q, scale, zp}, base + "_dq", attrs);
  }

  bool FlattensForLinear(const std::string& flatten_path) const override {
    for (const auto& [linear, in] : t_.model().flattened_inputs()) {
      if (in.flatten_path == flatten_path) return true;
    }
    return false;
  }

 private:
  std::string Fresh(const std::string& base) { return absl::StrCat(base, "_", counts_[base]++); }

  // An initializer holding t's values (f32, s32 or s8; parameters and running statistics are
  // copied from the backend's device first), named `name` (unique by construction).
  std::string Init(const std::string& name, const Tensor& device_t) {
    const Tensor t = Host(device_t);
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
  std::string ZeroPoints(const std::string& base, int64_t n) {
    return Constant(base, n > 0 ? Tensor::Zeros(DType::kS8, {n}) : Tensor::Zeros(DType::kS8, {}));
  }
  static Tensor Int8Scalar(float v) {
    Tensor t = Tensor::Zeros(DType::kS8, {});
    t.data<int8_t>()[0] = static_cast<int8_t>(v);
    return t;
  }

  // The rule that quantizes `path`'s op `op_id` (its weights, for a dense op), or null when
  // it runs in float.
  const engine::Rule* RuleOf(const std::string& path, const std::string& op_id) const {
    auto it = rule_of_.find(absl::StrCat(path, ":", op_id));
    if (it == rule_of_.end() || it->second < 0 || t_.model().rules() == nullptr) return nullptr;
    const engine::Rule& r = t_.model().rules()->rules()[it->second];
    return r.weight_qtype ? &r : nullptr;
  }

  // A parameter's values on the host; an empty tensor (and status_ set) when the copy fails.
  Tensor Host(const Tensor& t) {
    absl::StatusOr<Tensor> host = t_.OnHost(t);
    if (host.ok()) return *std::move(host);
    if (status_.ok()) status_ = host.status();
    return Tensor::Zeros(t.dtype(), t.shape());
  }

  engine::Trainer& t_;
  onnx::GraphProto* g_;
  absl::Status status_;
  std::map<std::string, int> counts_;
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
  Writer writer(trainer, g);
  QTRAIN_ASSIGN_OR_RETURN(std::string out, trainer.model().root().ExportOnnx(writer, "input"));
  QTRAIN_RETURN_IF_ERROR(writer.status());
  writer.Op("Identity", {out}, "identity", {});
  g->mutable_node(g->node_size() - 1)->set_output(0, "logits");
  SetValueInfo(g->add_output(), "logits", onnx::TensorProto::FLOAT, trainer.model().output_shape());
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
