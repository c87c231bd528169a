// Hugging Face Llama-family causal LMs (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM)
// from config.json, as transformers' modeling_llama / qwen2 / mistral build them (models.md):
// embed_tokens, pre-norm decoder layers (input_layernorm, self_attn with q/k/v/o projections,
// rotary embeddings and grouped KV heads; post_attention_layernorm, gated mlp), norm, lm_head
// (tied to embed_tokens with tie_word_embeddings). Module paths are HF's parameter names.
#include <algorithm>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures/hf_config.h"

namespace qtrain::engine::arch {
namespace {

using json = nlohmann::json;
using Config = HfConfig;

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

}  // namespace

absl::StatusOr<proto::ModelSpec> HfLlama(HfConfig& c, Options& options) {
  const std::string family = c.family();
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
  QTRAIN_ASSIGN_OR_RETURN(const proto::Activation::Kind act, HfActivation(c, "hidden_act", "silu"));
  QTRAIN_ASSIGN_OR_RETURN(const bool attention_bias, c.Bool("attention_bias", false));
  QTRAIN_ASSIGN_OR_RETURN(const bool mlp_bias, c.Bool("mlp_bias", false));
  QTRAIN_ASSIGN_OR_RETURN(const bool tied, c.Bool("tie_word_embeddings", false));
  QTRAIN_RETURN_IF_ERROR(c.Dropouts({"attention_dropout"}));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t tp, c.Int("pretraining_tp", int64_t{1}, 1, 1 << 10));
  QTRAIN_ASSIGN_OR_RETURN(const bool use_window, c.Bool("use_sliding_window", family != "qwen2"));

  QTRAIN_ASSIGN_OR_RETURN(const int64_t t, HfSequenceLength(c, options, max_pos));
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
  if (tp != 1) return c.Bad(absl::StrCat("pretraining_tp ", tp, " is not implemented"));
  if (heads % kv != 0) {
    return c.Bad(absl::StrCat("num_attention_heads ", heads, " is not a multiple of ",
                              "num_key_value_heads ", kv));
  }
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

  proto::Module norm;
  norm.mutable_rms_norm()->set_epsilon(static_cast<float>(eps));
  proto::Module mlp;
  mlp.mutable_gated_mlp()->set_hidden_features(ff);
  mlp.mutable_gated_mlp()->set_activation(act);
  mlp.mutable_gated_mlp()->set_bias(mlp_bias);
  std::vector<proto::Module> blocks;
  for (int64_t i = 0; i < layers; ++i) {
    blocks.push_back(
        Named(absl::StrCat(i),
              Seq({HfPreNorm(Named("input_layernorm", norm), Named("self_attn", attention)),
                   HfPreNorm(Named("post_attention_layernorm", norm), Named("mlp", mlp))})));
  }
  proto::Module embed;
  embed.mutable_embedding()->set_num_embeddings(vocab);
  embed.mutable_embedding()->set_features(d);
  proto::ModelSpec spec;
  QTRAIN_ASSIGN_OR_RETURN(*spec.mutable_input(), HfTokens(options, t, std::nullopt, vocab));
  // LlamaForCausalLM's loss with `labels`: next-token, −100 ignored.
  spec.mutable_loss()->set_ignore_index(-100);
  spec.mutable_loss()->set_shift_labels(true);
  *spec.mutable_body() =
      Seq({Named("model", Seq({Named("embed_tokens", embed), Named("layers", Seq(blocks)),
                               Named("norm", norm)})),
           Named("lm_head", tied ? TiedDense(vocab, "model/embed_tokens") : Dense(vocab, false))});
  return spec;
}

}  // namespace qtrain::engine::arch
