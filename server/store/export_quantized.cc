#include "server/store/export_quantized.h"

#include <cmath>
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

// A quantization_config args block: symmetric ints of `bits` under `strategy` (group_size for
// "group").
json Scheme(int bits, bool dynamic, const std::string& strategy, int64_t group = 0) {
  return {{"num_bits", bits},           {"type", "int"},
          {"symmetric", true},          {"strategy", strategy},
          {"dynamic", dynamic},         {"group_size", group > 0 ? json(group) : json(nullptr)},
          {"block_structure", nullptr}, {"observer", nullptr}};
}

// An integer qtype of at most 8 bits (int2..int8), which s8 tensors hold.
bool FitsS8(QType q) {
  const QTypeInfo& info = GetQTypeInfo(q);
  return !info.is_float8 && !info.is_unsigned && info.qmin >= -128.0f && info.qmax <= 127.0f;
}

// `q` (out, in) s8 of `bits`-bit values packed as compressed-tensors' pack-quantized: each value
// offset by 2^(bits-1) into unsigned, 32 / bits per int32 word (element j of a word in bits
// j*bits..), rows padded with zeros to whole words.
Tensor PackInt32(const Tensor& q, int bits) {
  const int64_t rows = q.dim(0), cols = q.dim(1), per_word = 32 / bits;
  const int64_t words = (cols + per_word - 1) / per_word;
  Tensor out = Tensor::Zeros(DType::kS32, {rows, words});
  const int8_t* src = q.data<int8_t>();
  int32_t* dst = out.data<int32_t>();
  const uint32_t offset = 1u << (bits - 1), mask = (1u << bits) - 1;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const uint32_t u =
          (static_cast<uint32_t>(src[r * cols + c] + static_cast<int>(offset))) & mask;
      uint32_t& word = reinterpret_cast<uint32_t&>(dst[r * words + c / per_word]);
      word |= u << (bits * (c % per_word));
    }
  }
  return out;
}

// One quantized linear layer's tensors under `name` (its PyTorch name); `packed` picks the
// pack-quantized layout. `scheme` receives the layer's config group (weights and activations).
absl::Status ExportLinear(engine::Trainer& t, const engine::Rule& rule, const std::string& module,
                          const std::string& name, const engine::Param& kernel, bool packed,
                          SafetensorsFile& out, json* scheme) {
  QTRAIN_ASSIGN_OR_RETURN(const Tensor value, t.OnHost(kernel.value));
  QTRAIN_ASSIGN_OR_RETURN(ExportWeight w, QuantizeWeightForExport(rule, module, value));
  Tensor q = TorchLinearWeight(t.model(), module, w.q);  // (out, in) int8
  const int64_t outs = q.dim(0), ins = q.dim(1);
  if (packed) {
    out.tensors[name + ".weight_packed"] = PackInt32(q, w.bits);
    Tensor shape = Tensor::Empty(DType::kS32, {2});
    shape.data<int32_t>()[0] = static_cast<int32_t>(outs);
    shape.data<int32_t>()[1] = static_cast<int32_t>(ins);
    out.tensors[name + ".weight_shape"] = std::move(shape);
  } else {
    out.tensors[name + ".weight"] = std::move(q);
  }
  if (w.group > 0) {
    w.scale = Transpose2(w.scale);  // (in / group, out) -> (out, in / group)
  } else {
    w.scale.Reshape({w.scale.numel(), 1});
    if (!w.per_channel) w.scale.Reshape({1});
  }
  out.tensors[name + ".weight_scale"] = std::move(w.scale);
  const std::string strategy = w.group > 0 ? "group" : w.per_channel ? "channel" : "tensor";
  *scheme = {{"weights", Scheme(w.bits, false, strategy, w.group)}};
  if (!rule.act_qtype) return absl::OkStatus();
  if (*rule.act_qtype != QType::kInt8) {
    return absl::InvalidArgumentError(absl::StrCat(
        module, ": activations in ", QTypeName(*rule.act_qtype), " are not exported (int8 only)"));
  }
  auto stat = t.quant_stats().find({module, "dot_general0_lhs"});
  QTRAIN_ASSIGN_OR_RETURN(
      std::optional<float> input_scale,
      StaticInputScale(rule, module, stat == t.quant_stats().end() ? nullptr : &stat->second));
  if (!input_scale) {  // dynamic: per token, or per token and tile as the weights' (Qwix)
    (*scheme)["input_activations"] = w.group > 0 && !rule.tile_weights_only
                                         ? Scheme(8, true, "group", w.group)
                                         : Scheme(8, true, "token");
    return absl::OkStatus();
  }
  out.tensors[name + ".input_scale"] = Tensor::FromFloats({1}, {*input_scale});
  (*scheme)["input_activations"] = Scheme(8, false, "tensor");
  return absl::OkStatus();
}

// The tile length a rule gives a kernel of `k` inputs (tile_size, or tile_fraction of k), 0 for
// none; as CompiledRules::Plan.
int64_t TileOf(const engine::Rule& rule, int64_t k) {
  if (rule.tile_fraction > 0.0f) {
    return static_cast<int64_t>(static_cast<double>(k) * rule.tile_fraction + 0.5);
  }
  return rule.tile_size;
}

}  // namespace

absl::StatusOr<ExportWeight> QuantizeWeightForExport(const engine::Rule& rule,
                                                     const std::string& module,
                                                     const Tensor& kernel) {
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
  // As the forward pass: over every axis but the output channels (the last), or all of them;
  // tiles split the inputs (axis 0 of a linear kernel).
  ReduceSpec spec;
  for (int a = 0; a < kernel.rank(); ++a) {
    if (a < kernel.rank() - 1 || rule.disable_channelwise_axes) spec.axes.push_back(a);
  }
  const int64_t tile = kernel.rank() == 2 ? TileOf(rule, kernel.dim(0)) : rule.tile_size;
  if (tile > 0) {
    if (kernel.rank() != 2 || rule.disable_channelwise_axes) {
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": tiled weight scales are exported for channelwise linear kernels only"));
    }
    spec.tile_axis = 0;
    spec.tile_size = tile;
  }
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(kernel.shape(), spec));
  QTRAIN_ASSIGN_OR_RETURN(
      QuantizedTensor q,
      CalibrateAndQuantize(kernel, layout, *rule.weight_qtype, rule.weight_method, nullptr));
  ExportWeight w;
  w.q = std::move(q.q);
  w.scale = std::move(q.params.scale);
  if (tile == 0) w.scale.Reshape({w.scale.numel()});
  w.per_channel = !rule.disable_channelwise_axes;
  w.group = tile;
  const QTypeInfo& info = GetQTypeInfo(*rule.weight_qtype);
  w.bits = static_cast<int>(std::lround(std::log2(info.qmax - info.qmin + 1.0f)));
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
  struct Layer {
    std::string module, name;
    const engine::Rule* rule;
    const engine::Param* kernel;
  };
  std::vector<Layer> layers;  // weight-quantized linear layers
  std::vector<std::string> ignore;
  bool packed = false;  // any layer narrower than int8: the whole file is pack-quantized
  for (const auto& [rule_index, op] : t.model().Ops()) {
    const size_t colon = op.rfind(':');
    const std::string module = op.substr(0, colon), op_id = op.substr(colon + 1);
    if (op_id != "dot_general0") continue;  // convolutions and attention stay float
    const engine::Rule* rule = rule_index >= 0 && t.model().rules() != nullptr
                                   ? &t.model().rules()->rules()[rule_index]
                                   : nullptr;
    const bool quantized = rule != nullptr && rule->weight_qtype.has_value();
    auto kernel = params.find(module + "/kernel");
    if (kernel == params.end() || kernel->second->value.rank() != 2) {
      if (quantized) {  // a head tied to the embedding table: one float tensor in the files
        return absl::InvalidArgumentError(absl::StrCat(
            module, ": a tied output layer is exported float; leave it out of the rules"));
      }
      continue;
    }
    const std::string name = SourceName(*kernel->second, module_map);
    const std::string layer = name.substr(0, name.rfind('.'));
    if (!quantized) {
      ignore.push_back(layer);
      continue;
    }
    if (kernel->second->torch_layout != engine::TorchLayout::kLinearKernel) {
      return absl::InvalidArgumentError(
          absl::StrCat(module,
                       ": a Conv1D layer (GPT-2's (in, out) layout) is not an nn.Linear, which is "
                       "what compressed-tensors and vLLM quantize; leave it out of the rules"));
    }
    if (TileOf(*rule, kernel->second->value.dim(0)) > 0 &&
        t.model().flattened_inputs().count(module)) {
      return absl::InvalidArgumentError(absl::StrCat(
          module, ": tiles over flattened feature maps do not map onto PyTorch's input order"));
    }
    const QTypeInfo* info =
        FitsS8(*rule->weight_qtype) ? &GetQTypeInfo(*rule->weight_qtype) : nullptr;
    packed = packed || (info != nullptr && info->qmax < 127.0f);
    layers.push_back({module, layer, rule, kernel->second});
  }
  SafetensorsFile out;
  std::map<std::string, std::pair<json, std::vector<std::string>>> groups;  // scheme -> layers
  std::set<std::string> done;                                               // params written
  for (const Layer& l : layers) {
    json scheme;
    QTRAIN_RETURN_IF_ERROR(
        ExportLinear(t, *l.rule, l.module, l.name, *l.kernel, packed, out, &scheme));
    auto& group = groups[scheme.dump()];
    group.first = scheme;
    group.second.push_back(l.name);
    done.insert(l.kernel->name);
  }
  // Everything else in float, named and laid out as PyTorch's.
  for (const auto& [pname, p] : params) {
    if (done.count(pname)) continue;
    QTRAIN_ASSIGN_OR_RETURN(const Tensor value, t.OnHost(p->value));
    out.tensors[SourceName(*p, module_map)] = ToTorchLayout(t.model(), *p, value);
  }
  for (const engine::StateTensor* st : t.model().state()) {  // BatchNorm buffers
    QTRAIN_ASSIGN_OR_RETURN(out.tensors[TorchName(st->name, st->torch_leaf, module_map)],
                            t.OnHost(st->value));
  }
  json config_groups = json::object();
  int index = 0;
  for (auto& [key, group] : groups) {
    json g = {{"targets", group.second}};
    g.update(group.first);
    config_groups[absl::StrCat("group_", index++)] = g;
  }
  const json config = {{"quant_method", "compressed-tensors"},
                       {"format", packed ? "pack-quantized" : "int-quantized"},
                       {"quantization_status", "compressed"},
                       {"config_groups", config_groups},
                       {"ignore", ignore}};
  out.metadata["format"] = "pt";
  out.metadata[kQuantizationConfigKey] = config.dump();
  if (!t.model().spec().hf_config().empty()) {
    json hf = json::parse(t.model().spec().hf_config(), nullptr, /*allow_exceptions=*/false);
    if (!hf.is_object()) {
      return absl::InvalidArgumentError("model spec: hf_config is not a JSON object");
    }
    hf["quantization_config"] = config;
    out.metadata[kHfConfigKey] = hf.dump(2);
  }
  return out;
}

}  // namespace qtrain::store
