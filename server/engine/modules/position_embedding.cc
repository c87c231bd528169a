// PositionEmbedding: adds a learned table to (T, D) tokens: a (1, T, D) one as torchvision's ViT
// encoder (pos_embedding, normal(0.02) at init) and big_vision's posembed_input, or the first T
// rows of a (P, D) torch.nn.Embedding as HF's GPT-2 wpe and BERT's position_embeddings (row 0
// everywhere: BERT's token_type_embeddings with token_type_ids all 0).
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class PositionEmbedding final : public Module {
 public:
  // `rows` 0: a (1, T, D) table named by the module's path; else (rows, D) named "weight".
  PositionEmbedding(std::string path, int64_t tokens, int64_t d, int64_t rows, bool row0_only,
                    uint64_t seed)
      : Module(std::move(path)), tokens_(tokens), d_(d), row0_only_(row0_only) {
    const std::string name = ChildPath("embedding");
    if (rows == 0) {
      table_ = MakeParam(name, NormalInit({1, tokens, d}, 0.02f, seed, name), "");
      TorchNameIsModulePath(table_, this->path());
    } else {
      table_ = MakeParam(name, NormalInit({rows, d}, 0.02f, seed, name), "weight");
    }
  }

  // The used rows are a bias over each example's T·D values (D values: row 0 only).
  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckTokens(path(), x, tokens_, d_));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, ctx.backend->Clone(x));
    QTRAIN_RETURN_IF_ERROR(ctx.backend->AddBias(y, table_.value, row0_only_ ? d_ : tokens_ * d_));
    kept_ = ctx.training;
    return y;
  }
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (!kept_) return NoForwardError(path());
    kept_ = false;
    QTRAIN_RETURN_IF_ERROR(
        ctx.backend->AccumulateBiasGrad(dy, table_.grad, row0_only_ ? d_ : tokens_ * d_));
    return dy.Share();
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&table_); }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    if (table_.value.dim(0) != 1) {
      return absl::UnimplementedError(absl::StrCat(
          "module \"", path(), "\": a (positions, D) position table has no ONNX form yet"));
    }
    return g.Op("Add", {x, g.Param(table_)}, path());
  }

 private:
  int64_t tokens_, d_;
  bool row0_only_;
  Param table_;
  bool kept_ = false;
};

absl::StatusOr<std::unique_ptr<Module>> BuildPositionEmbedding(const proto::Module& m,
                                                               ModuleSite& site) {
  const auto& p = m.position_embedding();
  const Shape in = site.shape();
  if (in.size() != 2) {
    return site.Bad(absl::StrCat("position_embedding needs (T, D) tokens, got ", ShapeString(in)));
  }
  const int64_t rows = p.num_positions();
  if (rows != 0) {
    QTRAIN_RETURN_IF_ERROR(site.CheckSize("num_positions", rows));
    if (!p.row0_only() && rows < in[0]) {
      return site.Bad(
          absl::StrCat("num_positions ", rows, " is fewer than the ", in[0], " tokens"));
    }
  } else if (p.row0_only()) {
    return site.Bad("row0_only needs num_positions");
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({rows ? rows : in[0], in[1]}));
  return site.Allocate([&] {
    return std::make_unique<PositionEmbedding>(site.path(), in[0], in[1], rows, p.row0_only(),
                                               site.seed());
  });
}

}  // namespace

extern const ModuleKind kPositionEmbeddingKind = {proto::Module::kPositionEmbedding,
                                                  "position_embedding", "PositionEmbedding",
                                                  FlattenUse::kBreaks, BuildPositionEmbedding};

}  // namespace qtrain::engine
