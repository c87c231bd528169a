// torchvision's VisionTransformer (torchvision/models/vision_transformer.py): a patch
// convolution, a class token, a learned position embedding, pre-norm encoder blocks
// (nn.MultiheadAttention with a packed in-projection, an exact-GELU MLP), the class token's
// final state into the head. Module names as its state dict has them.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures.h"

namespace qtrain::engine::arch {
namespace {

using Kind = proto::Activation;

proto::Module LayerNorm() {
  proto::Module m;
  m.mutable_layer_norm()->set_epsilon(1e-6f);
  return m;
}

proto::Module Dropout(double rate) {
  proto::Module m;
  m.mutable_dropout()->set_rate(static_cast<float>(rate));
  return m;
}

// x + body(x), the body's modules named in the parent (EncoderBlock holds ln_1 etc. directly).
proto::Module SharedScopeResidual(std::vector<proto::Module> body) {
  proto::Module m;
  *m.mutable_residual()->mutable_body() = Seq(std::move(body));
  m.mutable_residual()->set_share_scope(true);
  return m;
}

// encoder.layers.encoder_layer_{i}: x + attention(ln_1(x)), then + mlp(ln_2(·)).
proto::Module EncoderBlock(int index, int64_t heads, int64_t mlp_dim, int64_t hidden,
                           double dropout) {
  proto::Module attention;
  attention.mutable_attention()->set_num_heads(heads);
  attention.mutable_attention()->set_packed_projection(true);
  proto::Module mlp = Seq({Named("0", Dense(mlp_dim)), Act(Kind::GELU_EXACT), Dropout(dropout),
                           Named("3", Dense(hidden)), Dropout(dropout)});
  return Named(
      absl::StrCat("encoder_layer_", index),
      Seq({SharedScopeResidual({Named("ln_1", LayerNorm()),
                                Named("self_attention", std::move(attention)), Dropout(dropout)}),
           SharedScopeResidual({Named("ln_2", LayerNorm()), Named("mlp", std::move(mlp))})}));
}

}  // namespace

absl::StatusOr<proto::ModelSpec> TorchvisionVit(const VitDefaults& defaults, Options& options) {
  QTRAIN_ASSIGN_OR_RETURN(const int64_t classes, options.Int("num_classes", 1000, 1, 1 << 20));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t image, options.Int("image_size", 224, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t patch, options.Int("patch_size", defaults.patch, 1, 4096));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t layers,
                          options.Int("num_layers", defaults.layers, 1, 1024));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t heads, options.Int("num_heads", defaults.heads, 1, 1024));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t hidden,
                          options.Int("hidden_dim", defaults.hidden, 1, 1 << 16));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t mlp_dim, options.Int("mlp_dim", defaults.mlp, 1, 1 << 18));
  QTRAIN_ASSIGN_OR_RETURN(const double dropout, options.Real("dropout", 0.0, 0.0, 0.99));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t representation,
                          options.Int("representation_size", 0, 0, 1 << 16));
  // Dropout on the attention weights is not implemented; 0 is torchvision's default.
  QTRAIN_RETURN_IF_ERROR(options.Real("attention_dropout", 0.0, 0.0, 0.0).status());
  QTRAIN_ASSIGN_OR_RETURN(const std::vector<int64_t> input, options.InputShape(image));
  if (input[0] != image || input[1] != image) {
    return absl::InvalidArgumentError(absl::StrCat("torchvision ViT: input_shape ", input[0], "x",
                                                   input[1], " must be image_size x image_size (",
                                                   image, "x", image, ")"));
  }
  if (image % patch != 0) {
    return absl::InvalidArgumentError(absl::StrCat("torchvision ViT: image_size ", image,
                                                   " is not divisible by patch_size ", patch));
  }
  if (hidden % heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("torchvision ViT: hidden_dim ", hidden,
                                                   " is not divisible by num_heads ", heads));
  }
  proto::ModelSpec spec;
  for (int64_t d : input) spec.mutable_input()->add_shape(d);
  proto::Sequential* root = spec.mutable_body()->mutable_sequential();
  *root->add_layers() = Named("conv_proj", Conv(hidden, patch, patch, 0, true));
  proto::Module tokens, class_token, position, take;
  tokens.mutable_to_tokens();
  class_token.mutable_class_token();
  position.mutable_position_embedding();
  take.mutable_take_token()->set_index(0);
  *root->add_layers() = std::move(tokens);
  *root->add_layers() = Named("class_token", std::move(class_token));
  std::vector<proto::Module> blocks;
  for (int i = 0; i < layers; ++i) {
    blocks.push_back(EncoderBlock(i, heads, mlp_dim, hidden, dropout));
  }
  *root->add_layers() =
      Named("encoder", Seq({Named("pos_embedding", std::move(position)), Dropout(dropout),
                            Named("layers", Seq(std::move(blocks))), Named("ln", LayerNorm())}));
  *root->add_layers() = std::move(take);
  std::vector<proto::Module> head;
  if (representation > 0) {
    head.push_back(Named("pre_logits", Dense(representation)));
    head.push_back(Act(Kind::TANH));
  }
  head.push_back(Named("head", Dense(classes)));
  *root->add_layers() = Named("heads", Seq(std::move(head)));
  return spec;
}

}  // namespace qtrain::engine::arch
