#include "server/store/export_quantized.h"

#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/calibration.h"
#include "kernels/qtype.h"
#include "kernels/quantize.h"
#include "kernels/srq.h"
#include "kernels/status_macros.h"
#include "nlohmann/json.hpp"
#include "server/store/import_weights.h"

namespace qtrain::store {
namespace {

using json = nlohmann::ordered_json;

json Scheme(bool dynamic, const char* strategy) {
  return {{"num_bits", 8},
          {"type", "int"},
          {"symmetric", true},
          {"strategy", strategy},
          {"dynamic", dynamic},
          {"group_size", nullptr},
          {"block_structure", nullptr},
          {"observer", nullptr}};
}

// An integer qtype of at most 8 bits (int2..int8), which s8 tensors hold.
bool FitsS8(QType q) {
  const QTypeInfo& info = GetQTypeInfo(q);
  return !info.is_float8 && !info.is_unsigned && info.qmin >= -128.0f && info.qmax <= 127.0f;
}

// One quantized linear layer's tensors, under `name` (its PyTorch name).
absl::Status ExportLinear(engine::Trainer& t, const engine::Rule& rule, const std::string& module,
                          const std::string& name, const engine::Param& kernel,
                          SafetensorsFile& out, std::string* group) {
  QTRAIN_ASSIGN_OR_RETURN(ExportWeight w, QuantizeWeightForExport(rule, module, kernel.value));
  out.tensors[name + ".weight"] = TorchLinearWeight(t.model(), module, w.q);  // (out, in) int8
  const int64_t outs = w.scale.numel();
  w.scale.Reshape({outs, 1});
  out.tensors[name + ".weight_scale"] = std::move(w.scale);
  *group = w.per_channel ? "weight_only" : "weight_only_tensor";
  if (!rule.act_qtype) return absl::OkStatus();
  if (*rule.act_qtype != QType::kInt8) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": activations in ", QTypeName(*rule.act_qtype), " are not exported (int8 only)"));
  }
  auto stat = t.quant_stats().find({module, "dot_general0_lhs"});
  QTRAIN_ASSIGN_OR_RETURN(
      std::optional<float> input_scale,
      StaticInputScale(rule, module, stat == t.quant_stats().end() ? nullptr : &stat->second));
  if (!input_scale) {
    *group = w.per_channel ? "dynamic" : "dynamic_tensor";
    return absl::OkStatus();
  }
  out.tensors[name + ".input_scale"] = Tensor::FromFloats({1}, {*input_scale});
  *group = w.per_channel ? "static" : "static_tensor";
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ExportWeight> QuantizeWeightForExport(const engine::Rule& rule,
                                                     const std::string& module,
                                                     const Tensor& kernel) {
  if (rule.tile_size > 0 || rule.tile_fraction > 0.0f) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": tiled weight scales (tile_size / tile_fraction) are not exported"));
  }
  if (!rule.weight_method.IsSymmetric()) {
    return absl::InvalidArgumentError(
        absl::StrCat(module, ": weight calibration \"", rule.weight_method.ToString(),
                     "\" is asymmetric; the int8 exports take symmetric weights"));
  }
  if (!rule.weight_qtype || !FitsS8(*rule.weight_qtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": weights in ", rule.weight_qtype ? QTypeName(*rule.weight_qtype) : "float",
        " are not exported (int2..int8 only)"));
  }
  // As the forward pass: over every axis but the output channels (the last), or all of them.
  ReduceSpec spec;
  for (int a = 0; a < kernel.rank(); ++a) {
    if (a < kernel.rank() - 1 || rule.disable_channelwise_axes) spec.axes.push_back(a);
  }
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(kernel.shape(), spec));
  QTRAIN_ASSIGN_OR_RETURN(
      QuantizedTensor q,
      CalibrateAndQuantize(kernel, layout, *rule.weight_qtype, rule.weight_method, nullptr));
  ExportWeight w;
  w.q = std::move(q.q);
  w.scale = std::move(q.params.scale);
  w.scale.Reshape({w.scale.numel()});
  w.per_channel = !rule.disable_channelwise_axes;
  return w;
}

absl::StatusOr<std::optional<Tensor>> StaticInputScales(const engine::Rule& rule,
                                                        const std::string& module,
                                                        const SrqStat* stat) {
  if (!rule.act_qtype || !rule.act_static_scale) return std::optional<Tensor>();
  if (!FitsS8(*rule.act_qtype)) {
    return absl::InvalidArgumentError(absl::StrCat(module, ": activations in ",
                                                   QTypeName(*rule.act_qtype),
                                                   " are not exported (int2..int8 only)"));
  }
  if (stat == nullptr || stat->count == 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        module, ": no activation statistics yet; calibrate (or train) before exporting"));
  }
  QTRAIN_ASSIGN_OR_RETURN(Calibration cal, SrqCalibration(*stat, *rule.act_qtype));
  if (!cal.symmetric) {
    return absl::InvalidArgumentError(
        absl::StrCat(module,
                     ": static activation scales are asymmetric; the exports take "
                     "symmetric calibrations"));
  }
  QTRAIN_ASSIGN_OR_RETURN(QuantParams params, ComputeQuantParams(cal, *rule.act_qtype));
  return std::optional<Tensor>(std::move(params.scale));
}

absl::StatusOr<std::optional<float>> StaticInputScale(const engine::Rule& rule,
                                                      const std::string& module,
                                                      const SrqStat* stat) {
  QTRAIN_ASSIGN_OR_RETURN(std::optional<Tensor> scales, StaticInputScales(rule, module, stat));
  if (!scales) return std::optional<float>();
  if (scales->numel() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": static activation scales are per token (", ShapeString(scales->shape()),
        "); compressed-tensors takes one per tensor (act_batch_axes over every axis but the "
        "features)"));
  }
  return std::optional<float>(scales->data<float>()[0]);
}

absl::StatusOr<SafetensorsFile> ExportCompressedTensors(
    engine::Trainer& t, const std::map<std::string, std::string>& module_map) {
  QTRAIN_RETURN_IF_ERROR(CheckModuleMap(t.model(), module_map));
  std::map<std::string, const engine::Param*> params;
  for (const engine::Param* p : t.model().params()) params[p->name] = p;
  SafetensorsFile out;
  std::map<std::string, std::vector<std::string>> groups;  // scheme -> layer names
  std::vector<std::string> ignore;
  std::set<std::string> done;  // params written
  for (const auto& [rule_index, op] : t.model().Ops()) {
    const size_t colon = op.rfind(':');
    const std::string module = op.substr(0, colon), op_id = op.substr(colon + 1);
    auto kernel = params.find(module + "/kernel");
    const bool linear =
        op_id == "dot_general0" && kernel != params.end() && kernel->second->value.rank() == 2;
    if (!linear) continue;  // convolutions and attention stay float
    const std::string name = SourceName(*kernel->second, module_map);
    const std::string layer = name.substr(0, name.rfind('.'));
    const engine::Rule* rule = rule_index >= 0 && t.model().rules() != nullptr
                                   ? &t.model().rules()->rules()[rule_index]
                                   : nullptr;
    if (rule == nullptr || rule->weight_qtype != QType::kInt8) {
      ignore.push_back(layer);
      continue;
    }
    std::string group;
    QTRAIN_RETURN_IF_ERROR(ExportLinear(t, *rule, module, layer, *kernel->second, out, &group));
    groups[group].push_back(layer);
    done.insert(module + "/kernel");
  }
  // Everything else in float, named and laid out as PyTorch's.
  for (const auto& [pname, p] : params) {
    if (done.count(pname)) continue;
    out.tensors[SourceName(*p, module_map)] = ToTorchLayout(t.model(), *p, p->value);
  }
  for (const engine::StateTensor* st : t.model().state()) {  // BatchNorm buffers
    out.tensors[TorchName(st->name, st->torch_leaf, module_map)] = st->value;
  }
  json config_groups = json::object();
  int index = 0;
  for (const auto& [scheme, layers] : groups) {
    const bool per_tensor = absl::EndsWith(scheme, "_tensor");
    json g = {{"targets", layers}, {"weights", Scheme(false, per_tensor ? "tensor" : "channel")}};
    if (absl::StartsWith(scheme, "static")) g["input_activations"] = Scheme(false, "tensor");
    if (absl::StartsWith(scheme, "dynamic")) g["input_activations"] = Scheme(true, "token");
    config_groups[absl::StrCat("group_", index++)] = g;
  }
  const json config = {{"quant_method", "compressed-tensors"},
                       {"format", "int-quantized"},
                       {"quantization_status", "compressed"},
                       {"config_groups", config_groups},
                       {"ignore", ignore}};
  out.metadata["format"] = "pt";
  out.metadata[kQuantizationConfigKey] = config.dump();
  return out;
}

}  // namespace qtrain::store
