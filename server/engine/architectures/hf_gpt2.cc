// Hugging Face GPT2LMHeadModel from config.json, as transformers' modeling_gpt2 builds it
// (models.md): transformer.wte + transformer.wpe (learned positions), pre-norm blocks h.{i}
// (ln_1, attn with one packed Conv1D c_attn and c_proj, ln_2, mlp c_fc / c_proj with gelu_new),
// ln_f, and lm_head tied to wte. Conv1D weights are stored (in, out). Module paths are HF's
// parameter names; files without the "transformer." prefix import too (ImportWeights).
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures/hf_config.h"

namespace qtrain::engine::arch {

absl::StatusOr<proto::ModelSpec> HfGpt2(HfConfig& c, Options& options) {
  constexpr int64_t kMax = int64_t{1} << 20;
  QTRAIN_ASSIGN_OR_RETURN(const int64_t vocab, c.Int("vocab_size", 50257, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t d, c.Int("n_embd", 768, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t layers, c.Int("n_layer", 12, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t heads, c.Int("n_head", 12, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t positions, c.Int("n_positions", 1024, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t ctx, c.Int("n_ctx", positions, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t inner, c.Int("n_inner", 4 * d, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const double eps, c.Real("layer_norm_epsilon", 1e-5));
  QTRAIN_ASSIGN_OR_RETURN(const proto::Activation::Kind act,
                          HfActivation(c, "activation_function", "gelu_new"));
  QTRAIN_ASSIGN_OR_RETURN(const bool tied, c.Bool("tie_word_embeddings", true));
  QTRAIN_RETURN_IF_ERROR(c.Dropouts({"resid_pdrop", "embd_pdrop", "attn_pdrop"}));
  QTRAIN_RETURN_IF_ERROR(c.Require("scale_attn_weights", true));
  QTRAIN_RETURN_IF_ERROR(c.Require("scale_attn_by_inverse_layer_idx", false));
  QTRAIN_RETURN_IF_ERROR(c.Require("add_cross_attention", false));
  // Upcasting matters to fp16 / bf16 attention only; qtrain's is float32 either way.
  QTRAIN_RETURN_IF_ERROR(c.Bool("reorder_and_upcast_attn", false).status());
  // GPT2DoubleHeadsModel's multiple-choice head: not part of GPT2LMHeadModel.
  for (const char* k : {"summary_type", "summary_use_proj", "summary_activation",
                        "summary_proj_to_labels", "summary_first_dropout"}) {
    c.Has(k);
  }
  if (d % heads != 0) {
    return c.Bad(absl::StrCat("n_embd ", d, " is not a multiple of n_head ", heads));
  }
  if (ctx != positions) {
    return c.Bad(absl::StrCat("n_ctx ", ctx, " differs from n_positions ", positions));
  }
  QTRAIN_ASSIGN_OR_RETURN(const int64_t t, HfSequenceLength(c, options, positions));

  proto::Module norm;
  norm.mutable_layer_norm()->set_epsilon(static_cast<float>(eps));
  proto::Module attention;
  proto::MultiHeadAttention* at = attention.mutable_attention();
  at->set_num_heads(heads);
  at->set_causal(true);
  at->set_projection_names(proto::MultiHeadAttention::GPT2);
  const proto::Module mlp =
      Seq({Named("c_fc", Conv1D(inner)), Act(act), Named("c_proj", Conv1D(d))});
  std::vector<proto::Module> blocks;
  for (int64_t i = 0; i < layers; ++i) {
    blocks.push_back(
        Named(absl::StrCat(i), Seq({HfPreNorm(Named("ln_1", norm), Named("attn", attention)),
                                    HfPreNorm(Named("ln_2", norm), Named("mlp", mlp))})));
  }
  proto::Module wte, wpe;
  wte.mutable_embedding()->set_num_embeddings(vocab);
  wte.mutable_embedding()->set_features(d);
  wpe.mutable_position_embedding()->set_num_positions(positions);
  proto::ModelSpec spec;
  QTRAIN_ASSIGN_OR_RETURN(*spec.mutable_input(), HfTokens(options, t, std::nullopt, vocab));
  spec.mutable_loss()->set_ignore_index(-100);  // GPT2LMHeadModel's loss with `labels`
  spec.mutable_loss()->set_shift_labels(true);
  *spec.mutable_body() =
      Seq({Named("transformer", Seq({Named("wte", wte), Named("wpe", wpe), Named("h", Seq(blocks)),
                                     Named("ln_f", norm)})),
           Named("lm_head", tied ? TiedDense(vocab, "transformer/wte") : Dense(vocab, false))});
  return spec;
}

}  // namespace qtrain::engine::arch
