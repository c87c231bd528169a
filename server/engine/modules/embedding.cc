// Embedding (Flax Embed, torch.nn.Embedding): int32 token ids (B, T) → (B, T, features); float,
// never quantized (Qwix leaves gathers alone).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Embedding final : public Module {
 public:
  Embedding(std::string path, int64_t num, int64_t features, uint64_t seed)
      : Module(std::move(path)), num_(num), features_(features) {
    // flax.linen.Embed: variance_scaling(1.0, "fan_in", "normal", out_axis=0) → std 1/sqrt(F).
    const std::string name = ChildPath("embedding");
    table_ = MakeParam(
        name,
        NormalInit({num, features}, 1.0f / std::sqrt(static_cast<float>(features)), seed, name),
        "weight");
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& ids) override {
    if (ids.dtype() != DType::kS32) {
      return absl::InvalidArgumentError(absl::StrCat(
          "module \"", path(), "\": expected int32 token ids, got ", DTypeName(ids.dtype())));
    }
    absl::StatusOr<Tensor> y = ctx.backend->Embed(table_.value, ids);
    if (y.status().code() == absl::StatusCode::kInvalidArgument) {
      // "token id 7 at position 3 is outside [0, 5)": the vocabulary.
      return absl::InvalidArgumentError(
          absl::StrCat("module \"", path(), "\": token ", y.status().message()));
    }
    ids_ = ctx.training ? ids.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (ids_.empty()) {
      return NoForwardError(path());
    }
    QTRAIN_RETURN_IF_ERROR(ctx.backend->EmbedGrad(ids_, dy, table_.grad));
    ids_ = Tensor();
    return Tensor();  // no gradient flows into integer ids
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&table_); }
  Param* table() { return &table_; }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    return g.Op("Gather", {g.Param(table_), x}, path());
  }

 private:
  int64_t num_, features_;
  Param table_;
  Tensor ids_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildEmbedding(const proto::Module& m, ModuleSite& site) {
  const auto& e = m.embedding();
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("num_embeddings", e.num_embeddings()));
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("features", e.features()));
  if (!site.tokens()) {
    return site.Bad("embedding needs TOKENS input (input.kind)");
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({e.num_embeddings(), e.features()}));
  site.shape().push_back(e.features());
  site.tokens() = false;
  std::unique_ptr<Module> module = site.Allocate([&] {
    return std::make_unique<Embedding>(site.path(), e.num_embeddings(), e.features(), site.seed());
  });
  site.AddTable({{e.num_embeddings(), e.features()},
                 module ? static_cast<Embedding*>(module.get())->table() : nullptr});
  return module;
}

}  // namespace

extern const ModuleKind kEmbeddingKind = {proto::Module::kEmbedding, "embedding", "Embed",
                                          FlattenUse::kBreaks, BuildEmbedding};

}  // namespace qtrain::engine
