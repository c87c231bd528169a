#include "server/engine/architectures/hf_config.h"

#include <algorithm>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace qtrain::engine::arch {
namespace {

using json = nlohmann::json;

// What the forward does not depend on.
const std::set<std::string>& Ignored() {
  static const auto* s = new std::set<std::string>{"_name_or_path",
                                                   "architectures",
                                                   "model_type",
                                                   "torch_dtype",
                                                   "dtype",
                                                   "transformers_version",
                                                   "bos_token_id",
                                                   "eos_token_id",
                                                   "pad_token_id",
                                                   "sep_token_id",
                                                   "decoder_start_token_id",
                                                   "initializer_range",
                                                   "use_cache",
                                                   "tokenizer_class",
                                                   "output_attentions",
                                                   "output_hidden_states",
                                                   "return_dict",
                                                   "max_window_layers",
                                                   "tie_encoder_decoder",
                                                   "torchscript",
                                                   "pruned_heads",
                                                   "chunk_size_feed_forward",
                                                   "is_encoder_decoder",
                                                   "gradient_checkpointing",
                                                   "task_specific_params",
                                                   "prefix",
                                                   "finetuning_task",
                                                   "id2label",
                                                   "label2id"};
  return *s;
}

}  // namespace

absl::Status HfConfig::Bad(const std::string& what) const {
  return absl::InvalidArgumentError(absl::StrCat("hf ", family_, ": ", what));
}

bool HfConfig::Has(const std::string& k) {
  read_.insert(k);
  return j_.contains(k) && !j_[k].is_null();
}

absl::StatusOr<int64_t> HfConfig::Int(const std::string& k, std::optional<int64_t> def, int64_t lo,
                                      int64_t hi) {
  if (!Has(k)) {
    if (def) return *def;
    return Bad(absl::StrCat("config.json lacks ", k));
  }
  if (!j_[k].is_number_integer()) return Bad(absl::StrCat(k, " must be an integer"));
  const int64_t v = j_[k].get<int64_t>();
  if (v < lo || v > hi) return Bad(absl::StrCat(k, " = ", v, " must be in [", lo, ", ", hi, "]"));
  return v;
}

absl::StatusOr<double> HfConfig::Real(const std::string& k, double def) {
  if (!Has(k)) return def;
  if (!j_[k].is_number()) return Bad(absl::StrCat(k, " must be a number"));
  return j_[k].get<double>();
}

absl::StatusOr<bool> HfConfig::Bool(const std::string& k, bool def) {
  if (!Has(k)) return def;
  if (!j_[k].is_boolean()) return Bad(absl::StrCat(k, " must be true or false"));
  return j_[k].get<bool>();
}

absl::StatusOr<std::string> HfConfig::String(const std::string& k, const std::string& def) {
  if (!Has(k)) return def;
  if (!j_[k].is_string()) return Bad(absl::StrCat(k, " must be a string"));
  return j_[k].get<std::string>();
}

absl::Status HfConfig::Require(const std::string& k, const json& want) {
  if (!Has(k) || j_[k] == want) return absl::OkStatus();
  return Bad(absl::StrCat(k, " = ", j_[k].dump(), " is not implemented (", want.dump(), " is)"));
}

absl::Status HfConfig::Dropouts(std::initializer_list<const char*> keys) {
  for (const char* k : keys) {
    QTRAIN_ASSIGN_OR_RETURN(const double p, Real(k, 0.0));
    if (!(p >= 0 && p < 1)) return Bad(absl::StrCat(k, " = ", p, " must be in [0, 1)"));
  }
  return absl::OkStatus();
}

const json& HfConfig::Raw(const std::string& k) {
  read_.insert(k);
  return j_[k];
}

absl::Status HfConfig::CheckAllRead() const {
  std::vector<std::string> unknown;
  for (const auto& [k, v] : j_.items()) {
    if (!read_.count(k) && !Ignored().count(k)) unknown.push_back(k);
  }
  if (unknown.empty()) return absl::OkStatus();
  return Bad(absl::StrCat("config field", unknown.size() > 1 ? "s " : " ",
                          absl::StrJoin(unknown, ", "),
                          " not implemented by qtrain (refused rather than silently ignored)"));
}

absl::StatusOr<proto::Activation::Kind> HfActivation(HfConfig& c, const std::string& key,
                                                     const std::string& def) {
  static const std::map<std::string, proto::Activation::Kind> kActs = {
      {"silu", proto::Activation::SILU},       {"swish", proto::Activation::SILU},
      {"gelu", proto::Activation::GELU_EXACT}, {"relu", proto::Activation::RELU},
      {"tanh", proto::Activation::TANH},       {"gelu_pytorch_tanh", proto::Activation::GELU},
      {"gelu_new", proto::Activation::GELU}};
  QTRAIN_ASSIGN_OR_RETURN(const std::string act, c.String(key, def));
  auto a = kActs.find(act);
  if (a == kActs.end()) return c.Bad(absl::StrCat(key, " \"", act, "\" is not implemented"));
  return a->second;
}

absl::StatusOr<int64_t> HfSequenceLength(HfConfig& c, Options& options, int64_t max_positions) {
  const std::vector<int64_t>& shape = options.raw_input_shape();
  if (shape.size() > 1) {
    return c.Bad(absl::StrCat("input_shape is [T] (tokens), got ", shape.size(), " dims"));
  }
  const int64_t t = shape.empty() ? std::min<int64_t>(max_positions, 512) : shape[0];
  if (t < 1 || t > max_positions) {
    return c.Bad(absl::StrCat("sequence length ", t,
                              " must be in [1, max_position_embeddings = ", max_positions, "]"));
  }
  return t;
}

absl::StatusOr<proto::InputSpec> HfTokens(Options& options, int64_t t,
                                          std::optional<int64_t> default_pad, int64_t vocab) {
  proto::InputSpec input;
  input.set_kind(proto::InputSpec::TOKENS);
  input.add_shape(t);
  QTRAIN_ASSIGN_OR_RETURN(const int64_t pad,
                          options.Int("pad_id", default_pad.value_or(-1), -1, vocab - 1));
  if (pad >= 0) input.set_pad_id(pad);
  return input;
}

proto::Module HfPreNorm(proto::Module norm, proto::Module body) {
  proto::Module m;
  proto::Residual* r = m.mutable_residual();
  r->set_share_scope(true);
  *r->mutable_body() = Seq({std::move(norm), std::move(body)});
  return m;
}

absl::StatusOr<proto::ModelSpec> HfModel(Options& options) {
  json j = json::parse(options.hf_config(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("hf: hf_config is not a JSON object (config.json's text)");
  }
  std::string family;
  if (j.contains("model_type") && j["model_type"].is_string()) {
    family = j["model_type"].get<std::string>();
  }
  // model_type → the classes qtrain builds (the first is the default).
  static const std::map<std::string, std::vector<std::string>> kArchitectures = {
      {"llama", {"LlamaForCausalLM"}},
      {"qwen2", {"Qwen2ForCausalLM"}},
      {"mistral", {"MistralForCausalLM"}},
      {"gpt2", {"GPT2LMHeadModel"}},
      {"bert", {"BertModel", "BertForSequenceClassification"}}};
  auto known = kArchitectures.find(family);
  if (known == kArchitectures.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("hf: model_type \"", family,
                     "\" is not implemented (llama, qwen2, mistral, gpt2 and bert are)"));
  }
  std::string architecture = known->second.front();
  if (j.contains("architectures") && j["architectures"].is_array()) {
    const json& list = j["architectures"];
    for (const json& a : list) {
      const bool ok = a.is_string() &&
                      std::count(known->second.begin(), known->second.end(), a.get<std::string>());
      if (!ok || list.size() > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("hf ", family, ": architectures ", list.dump(), " is not implemented (",
                         absl::StrJoin(known->second, " or "), " is)"));
      }
      architecture = a.get<std::string>();
    }
  }
  HfConfig c(std::move(j), family);
  absl::StatusOr<proto::ModelSpec> spec = family == "gpt2"   ? HfGpt2(c, options)
                                          : family == "bert" ? HfBert(c, options, architecture)
                                                             : HfLlama(c, options);
  if (!spec.ok()) return spec.status();
  QTRAIN_RETURN_IF_ERROR(c.CheckAllRead());
  spec->set_name(architecture);
  spec->set_hf_config(options.hf_config());
  return spec;
}

}  // namespace qtrain::engine::arch
