// Sequential (Flax nn.Sequential, torch.nn.Sequential): layers applied in order.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/grad_reducer.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Sequential final : public Module {
 public:
  Sequential(std::string path, std::vector<std::unique_ptr<Module>> layers)
      : Module(std::move(path)), layers_(std::move(layers)) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    Tensor h = x.Share();
    for (auto& layer : layers_) {
      QTRAIN_ASSIGN_OR_RETURN(h, layer->Forward(ctx, h));
    }
    return h;
  }
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    Tensor g = dy.Share();
    for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
      // An empty gradient means nothing before this point needs one (SetInputGradNeeded).
      if (g.empty()) {
        break;
      }
      QTRAIN_ASSIGN_OR_RETURN(g, (*it)->Backward(ctx, g));
      if (ctx.reducer != nullptr) ctx.reducer->ModuleDone(**it);  // its gradients are final
    }
    return g;
  }
  std::vector<Module*> Children() override {
    std::vector<Module*> out;
    for (auto& l : layers_) {
      out.push_back(l.get());
    }
    return out;
  }
  // The first layers see the sequence's input; past a parameter-free layer (flatten,
  // activation...) the next one's input gradient is unused too.
  void SetInputGradNeeded(bool needed) override {
    for (auto& layer : layers_) {
      layer->SetInputGradNeeded(needed);
      std::vector<Param*> params;
      layer->CollectParams(&params);
      if (needed || !params.empty()) {
        break;
      }
    }
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    std::string h = x;
    for (auto& layer : layers_) {
      QTRAIN_ASSIGN_OR_RETURN(h, layer->ExportOnnx(g, h));
    }
    return h;
  }

 private:
  std::vector<std::unique_ptr<Module>> layers_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildSequential(const proto::Module& m, ModuleSite& site) {
  QTRAIN_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Module>> layers,
                          site.BuildLayers(m.sequential()));
  return MakeSequential(site.path(), std::move(layers));
}

}  // namespace

std::unique_ptr<Module> MakeSequential(std::string path,
                                       std::vector<std::unique_ptr<Module>> layers) {
  return std::make_unique<Sequential>(std::move(path), std::move(layers));
}

extern const ModuleKind kSequentialKind = {proto::Module::kSequential, "sequential", "Sequential",
                                           FlattenUse::kPasses, BuildSequential};

}  // namespace qtrain::engine
