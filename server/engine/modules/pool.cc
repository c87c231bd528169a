// Pool: max or average pooling over NHWC windows (Flax max_pool / avg_pool), or the global
// average over H and W.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"

namespace qtrain::engine {
namespace {

class Pool final : public Module {
 public:
  Pool(std::string path, const PoolDesc& g, bool global)
      : Module(std::move(path)), geometry_(g), global_(global) {}

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckF32(path(), x, 4));
    in_shape_ = x.shape();
    if (global_) {
      return ctx.backend->MeanOverRows(x, x.dim(0), x.dim(1) * x.dim(2));
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, ctx.backend->Pool(Desc(x.shape()), x));
    input_ = ctx.training ? x.Share() : Tensor();
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (in_shape_.size() != 4) {
      return NoForwardError(path());
    }
    if (global_) {
      return ctx.backend->MeanOverRowsGrad(dy, in_shape_[1] * in_shape_[2], in_shape_);
    }
    if (input_.empty()) {
      return NoForwardError(path());
    }
    absl::StatusOr<Tensor> dx = ctx.backend->PoolGrad(Desc(in_shape_), input_, dy);
    input_ = Tensor();
    return dx;
  }

  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    if (global_) {
      return g.Op("ReduceMean", {x}, path(),
                  {OnnxGraph::IntsAttr("axes", {1, 2}), OnnxGraph::IntAttr("keepdims", 0)});
    }
    // Averages exclude the padding (AveragePool's default), as the server's do.
    return g.ToNhwc(g.Op(geometry_.max ? "MaxPool" : "AveragePool", {g.ToNchw(x, path())}, path(),
                         WindowAttrs(geometry_)),
                    path());
  }

 private:
  PoolDesc Desc(const Shape& s) const {
    PoolDesc d = geometry_;
    d.n = s[0];
    d.h = s[1];
    d.w = s[2];
    d.c = s[3];
    return d;
  }

  PoolDesc geometry_;
  bool global_;
  Shape in_shape_;
  Tensor input_;
};

absl::StatusOr<std::unique_ptr<Module>> BuildPool(const proto::Module& m, ModuleSite& site) {
  const auto& p = m.pool();
  if (!proto::Pool::Kind_IsValid(p.kind())) {
    return site.Bad(
        absl::StrCat("unknown pool kind ", p.kind(), " (MAX = 0, AVG = 1, GLOBAL_AVG = 2)"));
  }
  if (!proto::Padding_IsValid(p.padding())) {
    return site.Bad(absl::StrCat("unknown padding ", p.padding(), " (SAME = 0, VALID = 1)"));
  }
  Shape& shape = site.shape();
  if (shape.size() != 3) {
    return site.Bad(absl::StrCat("pool needs (H, W, C) examples, got ", ShapeString(shape)));
  }
  if (p.kind() == proto::Pool::GLOBAL_AVG) {
    shape = {shape[2]};
    return std::make_unique<Pool>(site.path(), PoolDesc{}, true);
  }
  if (p.window_size() != 2) {
    return site.Bad("window must be [wh, ww]");
  }
  PoolDesc d;
  d.max = p.kind() == proto::Pool::MAX;
  d.h = shape[0];
  d.w = shape[1];
  d.c = shape[2];
  d.n = 1;
  QTRAIN_RETURN_IF_ERROR(SetWindow(site, "window", p.window(0), p.window(1),
                                   p.strides_size() == 2 ? p.strides(0) : p.window(0),
                                   p.strides_size() == 2 ? p.strides(1) : p.window(1),
                                   p.padding() == proto::SAME, p.explicit_padding(), d));
  absl::Status valid = ValidatePoolDesc(d);
  if (!valid.ok()) {
    return site.Bad(valid.message());
  }
  shape = {d.out_h(), d.out_w(), d.c};
  return std::make_unique<Pool>(site.path(), d, false);
}

}  // namespace

extern const ModuleKind kPoolKind = {proto::Module::kPool, "pool", "Pool", FlattenUse::kBreaks,
                                     BuildPool};

}  // namespace qtrain::engine
