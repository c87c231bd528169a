#include "client/cli/presets.h"

#include <map>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace qtrain::cli {
namespace {

const std::map<std::string, std::string>& RulePresets() {
  static const auto* presets = new std::map<std::string, std::string>{
      {"float", R"({})"},
      {"qat-int8", R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})"},
      {"qt-int8",
       R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "bwd_qtype": "int8"}]})"},
      {"srq-int8", R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
                                  "act_static_scale": true}]})"},
      {"qat-int4", R"({"rules": [{"weight_qtype": "int4", "act_qtype": "int8"}]})"},
      // Language models: the linear layers only (the attention einsums and lm_head float).
      {"w8a8", R"({"rules": [{"module_path": "lm_head"}, {"op_names": ["dot_general"],
                   "weight_qtype": "int8", "act_qtype": "int8"}]})"},
      {"8da4w", R"({"rules": [{"module_path": "lm_head"}, {"op_names": ["dot_general"],
                    "weight_qtype": "int4", "act_qtype": "int8", "tile_size": 32,
                    "tile_weights_only": true}]})"},
      {"w4a16", R"({"rules": [{"module_path": "lm_head"}, {"op_names": ["dot_general"],
                    "weight_qtype": "int4", "tile_size": 128}]})"},
  };
  return *presets;
}

template <typename M>
M FromJson(const std::string& json) {
  M m;
  (void)google::protobuf::util::JsonStringToMessage(json, &m);  // presets are valid by test
  return m;
}

std::string Names(const std::vector<std::string>& names) { return absl::StrJoin(names, ", "); }

}  // namespace

absl::StatusOr<v1::ModelSpec> ModelPreset(const std::string& name, const PresetOptions& o) {
  const std::string input =
      absl::StrCat(R"("input": {"shape": [)", absl::StrJoin(o.input_shape, ", "), "]}");
  if (name == "mlp") {
    return FromJson<v1::ModelSpec>(absl::StrCat("{", input, R"(, "body": {"sequential": {"layers": [
        {"flatten": {}}, {"linear": {"features": 256}}, {"activation": {"kind": "RELU"}},
        {"name": "head", "linear": {"features": )",
                                                o.classes, "}}]}}}"));
  }
  if (name == "cnn") {
    if (o.input_shape.size() != 3) {
      return absl::InvalidArgumentError(absl::StrCat("preset cnn needs an HWC --input_shape, not ",
                                                     absl::StrJoin(o.input_shape, ",")));
    }
    return FromJson<v1::ModelSpec>(absl::StrCat("{", input, R"(, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 16, "kernel_size": [3, 3]}}, {"activation": {"kind": "RELU"}},
        {"pool": {"kind": "MAX", "window": [2, 2]}},
        {"conv2d": {"features": 32, "kernel_size": [3, 3]}}, {"activation": {"kind": "RELU"}},
        {"pool": {"kind": "MAX", "window": [2, 2]}},
        {"flatten": {}}, {"name": "head", "linear": {"features": )",
                                                o.classes, "}}]}}}"));
  }
  if (name == "transformer-lm") {
    // A byte-level causal transformer: 2 pre-norm blocks, width 128, 4 heads.
    std::string blocks;
    for (int i = 0; i < 2; ++i) {
      absl::StrAppend(&blocks, R"({"name": "attn_)", i, R"(", "residual": {"body": {"sequential":
          {"layers": [{"layer_norm": {}}, {"name": "attn", "attention": {"num_heads": 4,
          "causal": true}}]}}}}, {"name": "mlp_)",
                      i, R"(", "residual": {"body": {"sequential":
          {"layers": [{"layer_norm": {}}, {"linear": {"features": 512}},
          {"activation": {"kind": "GELU"}}, {"linear": {"features": 128}}]}}}}, )");
    }
    return FromJson<v1::ModelSpec>(absl::StrCat(
        R"({"input": {"kind": "TOKENS", "shape": [)", o.seq_len,
        R"(]}, "body": {"sequential": {"layers": [
          {"embedding": {"num_embeddings": 256, "features": 128}}, )",
        blocks, R"({"layer_norm": {}}, {"name": "head", "linear": {"features": 256}}]}},
        "loss": {"kind": "SOFTMAX_CROSS_ENTROPY"}})"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--preset=", name, " is not one of ", Names({"mlp", "cnn", "transformer-lm"})));
}

bool IsRulesPreset(const std::string& name) { return RulePresets().count(name) > 0; }

absl::StatusOr<v1::RuleSet> RulesPreset(const std::string& name) {
  auto it = RulePresets().find(name);
  if (it == RulePresets().end()) {
    std::vector<std::string> names;
    for (const auto& [n, json] : RulePresets()) names.push_back(n);
    return absl::InvalidArgumentError(
        absl::StrCat("--rules=", name, " is not one of ", Names(names), ", a JSON file or JSON"));
  }
  return FromJson<v1::RuleSet>(it->second);
}

bool IsOptimizerPreset(const std::string& name) {
  return name == "adamw" || name == "sgd" || name == "momentum";
}

absl::StatusOr<v1::OptimizerConfig> OptimizerPreset(const std::string& name, double learning_rate) {
  v1::OptimizerConfig o;
  if (name == "adamw") {
    o.mutable_adamw();
  } else if (name == "sgd") {
    o.mutable_sgd();
  } else if (name == "momentum") {
    o.mutable_sgd()->set_momentum(0.9f);
  } else {
    return absl::InvalidArgumentError(absl::StrCat("--optimizer=", name, " is not one of ",
                                                   Names({"adamw", "sgd", "momentum"}),
                                                   ", a JSON file or JSON"));
  }
  o.mutable_schedule()->set_learning_rate(static_cast<float>(learning_rate));
  return o;
}

}  // namespace qtrain::cli
