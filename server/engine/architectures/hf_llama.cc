// Hugging Face Llama-family causal LMs (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)
// from config.json, as transformers' modeling_llama / qwen2 / mistral build them (models.md):
// embed_tokens, pre-norm decoder layers (input_layernorm, self_attn with q/k/v/o projections,
// rotary embeddings and grouped KV heads; post_attention_layernorm, gated mlp), norm, lm_head.
// Module paths are HF's parameter names. A config field that would change the model and that
// qtrain does not implement is refused by name; fields that only concern generation,
// tokenization or storage are ignored.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures.h"

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
                                                   "id2label",
                                                   "label2id"};
  return *s;
}

class Config {
 public:
  Config(json j, std::string family) : j_(std::move(j)), family_(std::move(family)) {}

  absl::Status Bad(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("hf ", family_, ": ", what));
  }
  bool Has(const std::string& k) {
    read_.insert(k);
    return j_.contains(k) && !j_[k].is_null();
  }
  absl::StatusOr<int64_t> Int(const std::string& k, std::optional<int64_t> def, int64_t lo,
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
  absl::StatusOr<double> Real(const std::string& k, double def) {
    if (!Has(k)) return def;
    if (!j_[k].is_number()) return Bad(absl::StrCat(k, " must be a number"));
    return j_[k].get<double>();
  }
  absl::StatusOr<bool> Bool(const std::string& k, bool def) {
    if (!Has(k)) return def;
    if (!j_[k].is_boolean()) return Bad(absl::StrCat(k, " must be true or false"));
    return j_[k].get<bool>();
  }
  absl::StatusOr<std::string> String(const std::string& k, const std::string& def) {
    if (!Has(k)) return def;
    if (!j_[k].is_string()) return Bad(absl::StrCat(k, " must be a string"));
    return j_[k].get<std::string>();
  }
  const json& Raw(const std::string& k) {
    read_.insert(k);
    return j_[k];
  }
  // InvalidArgument naming every field neither read nor known to be irrelevant.
  absl::Status CheckAllRead() const {
    std::vector<std::string> unknown;
    for (const auto& [k, v] : j_.items()) {
      if (!read_.count(k) && !Ignored().count(k)) unknown.push_back(k);
    }
    if (unknown.empty()) return absl::OkStatus();
    return Bad(absl::StrCat("config field", unknown.size() > 1 ? "s " : " ",
                            absl::StrJoin(unknown, ", "),
                            " not implemented by qtrain (refused rather than silently ignored)"));
  }

 private:
  json j_;
  std::string family_;
  std::set<std::string> read_;
};

// rope_scaling (or rope_parameters) → the attention's Rotary.
absl::Status ReadRotary(Config& c, proto::Rotary& r) {
  QTRAIN_ASSIGN_OR_RETURN(const double theta, c.Real("rope_theta", 10000.0));
  if (!(theta > 0)) return c.Bad(absl::StrCat("rope_theta = ", theta, " must be positive"));
  r.set_theta(theta);
  const std::string key = c.Has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!c.Has(key)) return absl::OkStatus();
  const json& s = c.Raw(key);
  if (!s.is_object()) return c.Bad(absl::StrCat(key, " must be an object"));
  std::string type = "default";
  for (const char* k : {"type", "rope_type"}) {  // rope_type wins, as in transformers
    if (!s.contains(k)) continue;
    if (!s[k].is_string()) return c.Bad(absl::StrCat(key, " field ", k, " must be a string"));
    type = s[k].get<std::string>();
  }
  std::set<std::string> allowed = {"rope_type", "type", "rope_theta"};
  if (s.contains("rope_theta")) {
    if (!s["rope_theta"].is_number() || !(s["rope_theta"].get<double>() > 0)) {
      return c.Bad(absl::StrCat(key, " field rope_theta must be a positive number"));
    }
    r.set_theta(s["rope_theta"].get<double>());
  }
  auto number = [&](const char* k) -> absl::StatusOr<double> {
    allowed.insert(k);
    if (!s.contains(k) || !s[k].is_number()) {
      return c.Bad(absl::StrCat(key, " of type ", type, " needs a number ", k));
    }
    return s[k].get<double>();
  };
  if (type == "linear") {
    r.set_scaling(proto::Rotary::LINEAR);
    QTRAIN_ASSIGN_OR_RETURN(const double f, number("factor"));
    r.set_factor(f);
  } else if (type == "llama3") {
    r.set_scaling(proto::Rotary::LLAMA3);
    QTRAIN_ASSIGN_OR_RETURN(const double f, number("factor"));
    QTRAIN_ASSIGN_OR_RETURN(const double low, number("low_freq_factor"));
    QTRAIN_ASSIGN_OR_RETURN(const double high, number("high_freq_factor"));
    QTRAIN_ASSIGN_OR_RETURN(const double orig, number("original_max_position_embeddings"));
    if (!(orig >= 1 && orig <= (1 << 24))) {
      return c.Bad(
          absl::StrCat(key, " original_max_position_embeddings = ", orig, " must be in [1, 2^24]"));
    }
    r.set_factor(f);
    r.set_low_freq_factor(low);
    r.set_high_freq_factor(high);
    r.set_original_max_position_embeddings(static_cast<int64_t>(orig));
  } else if (type != "default") {
    return c.Bad(absl::StrCat(key, " type \"", type,
                              "\" is not implemented (default, linear and llama3 are)"));
  }
  for (const auto& [k, v] : s.items()) {
    if (!allowed.count(k)) {
      return c.Bad(absl::StrCat(key, " field ", k, " is not implemented for type ", type));
    }
  }
  return absl::OkStatus();
}

proto::Module PreNorm(proto::Module norm, proto::Module body) {
  proto::Module m;
  proto::Residual* r = m.mutable_residual();
  r->set_share_scope(true);
  *r->mutable_body() = Seq({std::move(norm), std::move(body)});
  return m;
}

}  // namespace

absl::StatusOr<proto::ModelSpec> HfCausalLm(Options& options) {
  json j = json::parse(options.hf_config(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("hf: hf_config is not a JSON object (config.json's text)");
  }
  std::string family;
  if (j.contains("model_type") && j["model_type"].is_string()) {
    family = j["model_type"].get<std::string>();
  }
  static const std::map<std::string, std::string> kArchitectures = {
      {"llama", "LlamaForCausalLM"},
      {"qwen2", "Qwen2ForCausalLM"},
      {"mistral", "MistralForCausalLM"}};
  auto known = kArchitectures.find(family);
  if (known == kArchitectures.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "hf: model_type \"", family, "\" is not implemented (llama, qwen2 and mistral are)"));
  }
  if (j.contains("architectures") && j["architectures"].is_array()) {
    for (const json& a : j["architectures"]) {
      if (!a.is_string() || a.get<std::string>() != known->second) {
        return absl::InvalidArgumentError(absl::StrCat("hf ", family, ": architecture ", a.dump(),
                                                       " is not implemented (", known->second,
                                                       " is)"));
      }
    }
  }
  Config c(std::move(j), family);
  constexpr int64_t kMax = int64_t{1} << 20;
  QTRAIN_ASSIGN_OR_RETURN(const int64_t vocab, c.Int("vocab_size", std::nullopt, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t d, c.Int("hidden_size", std::nullopt, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t ff, c.Int("intermediate_size", std::nullopt, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t layers, c.Int("num_hidden_layers", std::nullopt, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t heads, c.Int("num_attention_heads", std::nullopt, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t kv, c.Int("num_key_value_heads", heads, 1, heads));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t head_dim, c.Int("head_dim", d / heads, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const double eps, c.Real("rms_norm_eps", 1e-6));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t max_pos,
                          c.Int("max_position_embeddings", int64_t{2048}, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const std::string act, c.String("hidden_act", "silu"));
  QTRAIN_ASSIGN_OR_RETURN(const bool attention_bias, c.Bool("attention_bias", false));
  QTRAIN_ASSIGN_OR_RETURN(const bool mlp_bias, c.Bool("mlp_bias", false));
  QTRAIN_ASSIGN_OR_RETURN(const bool tied, c.Bool("tie_word_embeddings", false));
  QTRAIN_ASSIGN_OR_RETURN(const double attention_dropout, c.Real("attention_dropout", 0.0));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t tp, c.Int("pretraining_tp", int64_t{1}, 1, 1 << 10));
  QTRAIN_ASSIGN_OR_RETURN(const bool use_window, c.Bool("use_sliding_window", family != "qwen2"));

  const std::vector<int64_t>& shape = options.raw_input_shape();
  if (shape.size() > 1) {
    return c.Bad(absl::StrCat("input_shape is [T] (tokens), got ", shape.size(), " dims"));
  }
  const int64_t t = shape.empty() ? std::min<int64_t>(max_pos, 512) : shape[0];
  if (t < 1 || t > max_pos) {
    return c.Bad(absl::StrCat("sequence length ", t,
                              " must be in [1, max_position_embeddings = ", max_pos, "]"));
  }
  if (c.Has("sliding_window") && use_window) {
    QTRAIN_ASSIGN_OR_RETURN(const int64_t window, c.Int("sliding_window", std::nullopt, 1, kMax));
    if (window < t) {
      return c.Bad(absl::StrCat("sliding_window ", window, " is shorter than the sequence length ",
                                t, ": sliding-window attention is not implemented"));
    }
  }
  if (c.Has("layer_types")) {  // newer configs list each layer's attention
    const json& types = c.Raw("layer_types");
    if (!types.is_array()) return c.Bad("layer_types must be a list");
    for (const json& type : types) {
      if (!type.is_string() || type.get<std::string>() != "full_attention") {
        return c.Bad(absl::StrCat("layer_types entry ", type.dump(),
                                  " is not implemented (full_attention is)"));
      }
    }
  }
  if (tied) {
    return c.Bad("tie_word_embeddings true is not implemented yet (lm_head sharing embed_tokens)");
  }
  if (attention_dropout != 0) {
    return c.Bad(absl::StrCat("attention_dropout ", attention_dropout, " is not implemented"));
  }
  if (tp != 1) return c.Bad(absl::StrCat("pretraining_tp ", tp, " is not implemented"));
  if (heads % kv != 0) {
    return c.Bad(absl::StrCat("num_attention_heads ", heads, " is not a multiple of ",
                              "num_key_value_heads ", kv));
  }
  static const std::map<std::string, proto::Activation::Kind> kActs = {
      {"silu", proto::Activation::SILU},
      {"swish", proto::Activation::SILU},
      {"gelu", proto::Activation::GELU_EXACT},
      {"gelu_pytorch_tanh", proto::Activation::GELU},
      {"gelu_new", proto::Activation::GELU}};
  auto a = kActs.find(act);
  if (a == kActs.end()) return c.Bad(absl::StrCat("hidden_act \"", act, "\" is not implemented"));

  proto::Module attention;
  proto::MultiHeadAttention* at = attention.mutable_attention();
  at->set_num_heads(heads);
  at->set_num_kv_heads(kv);
  at->set_head_dim(head_dim);
  at->set_causal(true);
  at->set_projection_names(proto::MultiHeadAttention::HF);
  const bool qwen2 = family == "qwen2";  // Qwen2Attention: q/k/v biases, o without
  at->set_no_qkv_bias(!(qwen2 || attention_bias));
  at->set_no_out_bias(qwen2 || !attention_bias);
  QTRAIN_RETURN_IF_ERROR(ReadRotary(c, *at->mutable_rotary()));
  QTRAIN_RETURN_IF_ERROR(c.CheckAllRead());

  proto::Module norm;
  norm.mutable_rms_norm()->set_epsilon(static_cast<float>(eps));
  proto::Module mlp;
  mlp.mutable_gated_mlp()->set_hidden_features(ff);
  mlp.mutable_gated_mlp()->set_activation(a->second);
  mlp.mutable_gated_mlp()->set_bias(mlp_bias);
  std::vector<proto::Module> blocks;
  for (int64_t i = 0; i < layers; ++i) {
    blocks.push_back(
        Named(absl::StrCat(i),
              Seq({PreNorm(Named("input_layernorm", norm), Named("self_attn", attention)),
                   PreNorm(Named("post_attention_layernorm", norm), Named("mlp", mlp))})));
  }
  proto::Module embed;
  embed.mutable_embedding()->set_num_embeddings(vocab);
  embed.mutable_embedding()->set_features(d);
  proto::ModelSpec spec;
  spec.set_name(known->second);
  spec.mutable_input()->set_kind(proto::InputSpec::TOKENS);
  spec.mutable_input()->add_shape(t);
  // LlamaForCausalLM's loss with `labels`: next-token, −100 ignored.
  spec.mutable_loss()->set_ignore_index(-100);
  spec.mutable_loss()->set_shift_labels(true);
  *spec.mutable_body() =
      Seq({Named("model", Seq({Named("embed_tokens", embed), Named("layers", Seq(blocks)),
                               Named("norm", norm)})),
           Named("lm_head", Dense(vocab, false))});
  return spec;
}

}  // namespace qtrain::engine::arch
