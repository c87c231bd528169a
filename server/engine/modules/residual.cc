// Residual: y = body(x) + x, or body(x) + shortcut(x) (ResNet's projection shortcut).
#include <map>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Residual final : public Module {
 public:
  // `shortcut` null: the identity.
  Residual(std::string path, std::unique_ptr<Module> body, std::unique_ptr<Module> shortcut)
      : Module(std::move(path)), body_(std::move(body)), shortcut_(std::move(shortcut)) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, body_->Forward(ctx, x));
    Tensor s = x.Share();
    if (shortcut_) {
      QTRAIN_ASSIGN_OR_RETURN(s, shortcut_->Forward(ctx, x));
    }
    if (y.shape() != s.shape()) {
      return absl::InvalidArgumentError(
          absl::StrCat("residual \"", path(), "\": body maps ", ShapeString(x.shape()), " to ",
                       ShapeString(y.shape()), ", the shortcut to ", ShapeString(s.shape())));
    }
    return ctx.backend->Add(y, s);  // a new tensor: inputs may be shared
  }
  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    QTRAIN_ASSIGN_OR_RETURN(Tensor dx, body_->Backward(ctx, dy));
    Tensor ds = dy.Share();
    if (shortcut_) {  // runs even when dx is not needed: its parameters need their gradients
      QTRAIN_ASSIGN_OR_RETURN(ds, shortcut_->Backward(ctx, dy));
    }
    if (!needed_) {
      return Tensor();
    }
    if (dx.empty()) return ds;
    if (ds.empty()) return dx;
    return ctx.backend->Add(dx, ds);
  }
  std::vector<Module*> Children() override {
    if (shortcut_) return {body_.get(), shortcut_.get()};
    return {body_.get()};
  }
  void SetInputGradNeeded(bool needed) override {
    needed_ = needed;
    body_->SetInputGradNeeded(needed);
    if (shortcut_) shortcut_->SetInputGradNeeded(needed);
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    QTRAIN_ASSIGN_OR_RETURN(std::string y, body_->ExportOnnx(g, x));
    if (!shortcut_) return g.Op("Add", {x, y}, path());
    QTRAIN_ASSIGN_OR_RETURN(std::string s, shortcut_->ExportOnnx(g, x));
    return g.Op("Add", {y, s}, path());
  }

 private:
  std::unique_ptr<Module> body_, shortcut_;
  bool needed_ = true;
};

absl::StatusOr<std::unique_ptr<Module>> BuildResidual(const proto::Module& m, ModuleSite& site) {
  const auto& r = m.residual();
  if (!r.has_body()) {
    return site.Bad("residual needs a body");
  }
  const Shape in = site.shape();
  QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> body, r.share_scope()
                                                            ? site.BuildBodyInParentScope(r.body())
                                                            : site.BuildBody(r.body()));
  const Shape out = site.shape();
  std::unique_ptr<Module> shortcut;
  site.shape() = in;  // what the shortcut maps
  if (r.has_shortcut()) {
    // An unnamed shortcut is "shortcut" (a Sequential one keeps its layers under that name).
    proto::Module named = r.shortcut();
    if (named.name().empty()) named.set_name("shortcut");
    if (r.share_scope()) {
      return site.Bad("share_scope takes no shortcut (name the shortcut's modules in the parent)");
    }
    std::map<std::string, int> counters;
    QTRAIN_ASSIGN_OR_RETURN(shortcut, site.BuildChild(named, counters));
  }
  if (site.shape() != out) {
    return site.Bad(absl::StrCat("residual body maps ", ShapeString(in), " to ", ShapeString(out),
                                 shortcut ? ", the shortcut to " + ShapeString(site.shape())
                                          : " (without a shortcut it must keep the shape)"));
  }
  return std::make_unique<Residual>(site.path(), std::move(body), std::move(shortcut));
}

}  // namespace

extern const ModuleKind kResidualKind = {proto::Module::kResidual, "residual", "Residual",
                                         FlattenUse::kBreaks, BuildResidual};

}  // namespace qtrain::engine
