// PositionEmbedding: adds a learned (1, T, D) table to (T, D) tokens, as torchvision's ViT
// encoder (pos_embedding, normal(0.02) at init) and big_vision's posembed_input.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class PositionEmbedding final : public Module {
 public:
  PositionEmbedding(std::string path, int64_t tokens, int64_t d, uint64_t seed)
      : Module(std::move(path)), tokens_(tokens), d_(d) {
    const std::string name = ChildPath("embedding");
    table_ = MakeParam(name, NormalInit({1, tokens, d}, 0.02f, seed, name), "");
    TorchNameIsModulePath(table_, this->path());
  }

  // The table is a bias over each example's T·D values.
  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckTokens(path(), x, tokens_, d_));
    Tensor y = x;
    AddBias(y, table_.value);
    kept_ = ctx.training;
    return y;
  }
  absl::StatusOr<Tensor> Backward(StepContext&, const Tensor& dy) override {
    if (!kept_) return NoForwardError(path());
    kept_ = false;
    AccumulateBiasGrad(dy, table_.grad);
    return dy.Share();
  }

  void CollectParams(std::vector<Param*>* out) override { out->push_back(&table_); }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    return g.Op("Add", {x, g.Param(table_)}, path());
  }

 private:
  int64_t tokens_, d_;
  Param table_;
  bool kept_ = false;
};

absl::StatusOr<std::unique_ptr<Module>> BuildPositionEmbedding(const proto::Module&,
                                                               ModuleSite& site) {
  const Shape in = site.shape();
  if (in.size() != 2) {
    return site.Bad(absl::StrCat("position_embedding needs (T, D) tokens, got ", ShapeString(in)));
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({in[0], in[1]}));
  return site.Allocate(
      [&] { return std::make_unique<PositionEmbedding>(site.path(), in[0], in[1], site.seed()); });
}

}  // namespace

extern const ModuleKind kPositionEmbeddingKind = {proto::Module::kPositionEmbedding,
                                                  "position_embedding", "PositionEmbedding",
                                                  FlattenUse::kBreaks, BuildPositionEmbedding};

}  // namespace qtrain::engine
