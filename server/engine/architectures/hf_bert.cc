// Hugging Face BertModel and BertForSequenceClassification from config.json, as transformers'
// modeling_bert builds them (models.md): embeddings (word + absolute position + token type 0,
// LayerNorm), post-norm encoder layers (attention.self.query / key / value, attention.output.dense
// and .LayerNorm; intermediate.dense with gelu; output.dense and .LayerNorm), then for
// classification the pooler (tanh(dense(h[:, 0]))) and classifier. BertModel's output is the
// last hidden state; its pooler tensors are accepted and dropped. Module paths are HF's parameter
// names ("bert." under the classification model; ImportWeights takes files with or without it).
// pad_token_id is the pad_id: padded keys are masked as HF's attention_mask from its tokenizer.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures/hf_config.h"

namespace qtrain::engine::arch {

absl::StatusOr<proto::ModelSpec> HfBert(HfConfig& c, Options& options,
                                        const std::string& architecture) {
  constexpr int64_t kMax = int64_t{1} << 20;
  QTRAIN_ASSIGN_OR_RETURN(const int64_t vocab, c.Int("vocab_size", 30522, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t d, c.Int("hidden_size", 768, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t layers, c.Int("num_hidden_layers", 12, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t heads, c.Int("num_attention_heads", 12, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t ff, c.Int("intermediate_size", 3072, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t positions, c.Int("max_position_embeddings", 512, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t types, c.Int("type_vocab_size", 2, 1, kMax));
  QTRAIN_ASSIGN_OR_RETURN(const double eps, c.Real("layer_norm_eps", 1e-12));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t pad, c.Int("pad_token_id", 0, -1, vocab - 1));
  QTRAIN_ASSIGN_OR_RETURN(const proto::Activation::Kind act, HfActivation(c, "hidden_act", "gelu"));
  QTRAIN_RETURN_IF_ERROR(
      c.Dropouts({"hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"}));
  QTRAIN_RETURN_IF_ERROR(c.Require("position_embedding_type", "absolute"));
  QTRAIN_RETURN_IF_ERROR(c.Require("is_decoder", false));
  QTRAIN_RETURN_IF_ERROR(c.Require("add_cross_attention", false));
  if (d % heads != 0) {
    return c.Bad(
        absl::StrCat("hidden_size ", d, " is not a multiple of num_attention_heads ", heads));
  }
  QTRAIN_ASSIGN_OR_RETURN(const int64_t t, HfSequenceLength(c, options, positions));
  const bool classify = architecture == "BertForSequenceClassification";
  int64_t labels = 0;
  if (classify) {
    QTRAIN_RETURN_IF_ERROR(c.Require("problem_type", "single_label_classification"));
    int64_t from_names = 2;  // PretrainedConfig's default num_labels
    if (c.Has("id2label")) {
      const nlohmann::json& names = c.Raw("id2label");
      if (!names.is_object() || names.empty()) return c.Bad("id2label must be a non-empty object");
      from_names = static_cast<int64_t>(names.size());
    }
    QTRAIN_ASSIGN_OR_RETURN(labels, c.Int("num_labels", from_names, 1, kMax));
    if (labels == 1) {
      return c.Bad("num_labels 1 (regression with an MSE loss) is not implemented");
    }
  } else {
    c.Has("problem_type");  // read by task heads only
  }

  proto::Module norm;
  norm.mutable_layer_norm()->set_epsilon(static_cast<float>(eps));
  proto::Module word, position, type;
  word.mutable_embedding()->set_num_embeddings(vocab);
  word.mutable_embedding()->set_features(d);
  position.mutable_position_embedding()->set_num_positions(positions);
  type.mutable_position_embedding()->set_num_positions(types);
  type.mutable_position_embedding()->set_row0_only(true);
  proto::Module attention;
  proto::MultiHeadAttention* at = attention.mutable_attention();
  at->set_num_heads(heads);
  at->set_projection_names(proto::MultiHeadAttention::BERT);
  const auto residual = [](proto::Module body) {
    proto::Module m;
    m.mutable_residual()->set_share_scope(true);
    *m.mutable_residual()->mutable_body() = std::move(body);
    return m;
  };
  std::vector<proto::Module> blocks;
  for (int64_t i = 0; i < layers; ++i) {
    blocks.push_back(Named(
        absl::StrCat(i),
        Seq({residual(Named("attention", attention)), Named("attention/output/LayerNorm", norm),
             residual(Seq({Named("intermediate/dense", Dense(ff)), Act(act),
                           Named("output/dense", Dense(d))})),
             Named("output/LayerNorm", norm)})));
  }
  std::vector<proto::Module> bert = {
      Named("embeddings",
            Seq({Named("word_embeddings", word), Named("position_embeddings", position),
                 Named("token_type_embeddings", type), Named("LayerNorm", norm)})),
      Named("encoder", Seq({Named("layer", Seq(blocks))}))};
  proto::ModelSpec spec;
  QTRAIN_ASSIGN_OR_RETURN(*spec.mutable_input(), HfTokens(options, t, pad, vocab));
  // BertEmbeddings' position_ids buffer, which older checkpoints hold.
  spec.add_import_ignores(classify ? "bert/embeddings/position_ids" : "embeddings/position_ids");
  if (!classify) {
    // BertModel's first output, the last hidden state; trained against targets of its shape.
    spec.mutable_loss()->set_kind(proto::Loss::MSE);
    spec.add_import_ignores("pooler/dense/weight");
    spec.add_import_ignores("pooler/dense/bias");
    *spec.mutable_body() = Seq(std::move(bert));
    return spec;
  }
  proto::Module first;
  first.mutable_take_token()->set_index(0);
  bert.push_back(first);
  bert.push_back(Named("pooler/dense", Dense(d)));
  bert.push_back(Act(proto::Activation::TANH));
  *spec.mutable_body() =
      Seq({Named("bert", Seq(std::move(bert))), Named("classifier", Dense(labels))});
  return spec;
}

}  // namespace qtrain::engine::arch
