// Conv2D (Flax Conv, torch.nn.Conv2d): NHWC convolution with an HWIO kernel (PyTorch: OIHW).
// Quantizable op: conv_general_dilated0.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"
#include "server/engine/quant_op.h"

namespace qtrain::engine {
namespace {

class Conv2D final : public Module {
 public:
  Conv2D(std::string path, const ConvDesc& g, bool bias, uint64_t seed)
      : Module(std::move(path)), geometry_(g), conv_(this->path()) {
    kernel_ = MakeParam(ChildPath("kernel"),
                        LecunNormal({g.kh, g.kw, g.group_c(), g.o}, g.kh * g.kw * g.group_c(), seed,
                                    ChildPath("kernel")),
                        "weight");
    kernel_.torch_layout = TorchLayout::kConvKernel;
    kernel_.accumulates = false;
    if (bias) {
      bias_ = std::make_unique<Param>(MakeParam(ChildPath("bias"), Constant({g.o}, 0.0f), "bias"));
    }
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, geometry_.c, 4));
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, conv_.Forward(ctx, x, kernel_.value));
    if (bias_) {
      QTRAIN_RETURN_IF_ERROR(ctx.backend->AddBias(y, bias_->value, bias_->value.numel()));
    }
    kept_ = ctx.training;
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (!kept_) {
      return NoForwardError(path());
    }
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients grads, conv_.Backward(ctx, dy));
    kernel_.grad = std::move(grads.dw);
    if (bias_) {
      QTRAIN_RETURN_IF_ERROR(ctx.backend->AccumulateBiasGrad(dy, bias_->grad, bias_->grad.numel()));
    }
    kept_ = false;
    return std::move(grads.dx);
  }

  void CollectParams(std::vector<Param*>* out) override {
    out->push_back(&kernel_);
    if (bias_) {
      out->push_back(bias_.get());
    }
  }
  absl::Status PlanOps(const CompiledRules* rules) override {
    QConvConfig g;
    g.stride_h = geometry_.stride_h;
    g.stride_w = geometry_.stride_w;
    g.pad_top = geometry_.pad_top;
    g.pad_left = geometry_.pad_left;
    g.pad_bottom = geometry_.pad_bottom;
    g.pad_right = geometry_.pad_right;
    g.groups = geometry_.groups;
    g.dilation_h = geometry_.dilation_h;
    g.dilation_w = geometry_.dilation_w;
    return conv_.Plan(rules, g);
  }
  void ReportOps(std::vector<std::pair<int, std::string>>* out) override {
    out->emplace_back(conv_.rule_index(), path() + ":" + QuantizedConv::kOpId);
  }
  void SetInputGradNeeded(bool needed) override { conv_.set_skip_dx(!needed); }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    const std::string op = QuantizedConv::kOpId;
    QTRAIN_ASSIGN_OR_RETURN(std::string in, g.QdqActivation(path(), op, op + "_lhs", x));
    QTRAIN_ASSIGN_OR_RETURN(std::string w,
                            g.Weight(path(), op, kernel_, OnnxGraph::KernelLayout::kConv));
    std::vector<std::string> inputs = {g.ToNchw(in, path()), w};
    if (bias_) inputs.push_back(g.Param(*bias_));
    std::vector<OnnxGraph::Attr> attrs = WindowAttrs(geometry_);
    attrs.push_back(OnnxGraph::IntAttr("group", geometry_.groups));
    attrs.push_back(OnnxGraph::IntsAttr("dilations", {geometry_.dilation_h, geometry_.dilation_w}));
    return g.ToNhwc(g.Op("Conv", inputs, path(), attrs), path());
  }

 private:
  ConvDesc geometry_;
  QuantizedConv conv_;
  Param kernel_;
  std::unique_ptr<Param> bias_;
  bool kept_ = false;
};

// feature_group_count and kernel_dilation into d (whose c and o are set), each checked.
absl::Status SetGroupsAndDilation(const ModuleSite& site, const proto::Conv2D& c, ConvDesc& d) {
  d.groups = c.feature_group_count() == 0 ? 1 : c.feature_group_count();
  if (d.groups < 0 || d.c % d.groups != 0 || d.o % d.groups != 0) {
    return site.Bad(absl::StrCat("feature_group_count ", c.feature_group_count(),
                                 " must divide both the input channels (", d.c, ") and features (",
                                 d.o, ")"));
  }
  if (c.kernel_dilation_size() == 0) return absl::OkStatus();
  if (c.kernel_dilation_size() != 2) {
    return site.Bad("kernel_dilation must be [dh, dw] or unset");
  }
  for (int64_t v : c.kernel_dilation()) {
    QTRAIN_RETURN_IF_ERROR(site.CheckSize("kernel_dilation", v));
  }
  d.dilation_h = c.kernel_dilation(0);
  d.dilation_w = c.kernel_dilation(1);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Module>> BuildConv2D(const proto::Module& m, ModuleSite& site) {
  const auto& c = m.conv2d();
  const Shape& shape = site.shape();
  if (shape.size() != 3) {
    return site.Bad(absl::StrCat("conv2d needs (H, W, C) examples, got ", ShapeString(shape),
                                 " (a flatten before it, or an input shape without channels?)"));
  }
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("features", c.features()));
  if (c.kernel_size_size() != 2) {
    return site.Bad("kernel_size must be [kh, kw]");
  }
  if (c.strides_size() != 0 && c.strides_size() != 2) {
    return site.Bad("strides must be [sh, sw] or unset");
  }
  if (!proto::Padding_IsValid(c.padding())) {
    return site.Bad(absl::StrCat("unknown padding ", c.padding(), " (SAME = 0, VALID = 1)"));
  }
  ConvDesc d;
  d.n = 1;
  d.h = shape[0];
  d.w = shape[1];
  d.c = shape[2];
  d.o = c.features();
  QTRAIN_RETURN_IF_ERROR(SetGroupsAndDilation(site, c, d));
  QTRAIN_RETURN_IF_ERROR(SetWindow(
      site, "kernel_size", c.kernel_size(0), c.kernel_size(1), c.strides_size() ? c.strides(0) : 1,
      c.strides_size() ? c.strides(1) : 1, c.padding() == proto::SAME, c.explicit_padding(), d));
  absl::Status valid = ValidateConvDesc(d);
  if (!valid.ok()) {
    return site.Bad(valid.message());
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({d.kh, d.kw, d.group_c(), d.o}, d.o));
  site.shape() = {d.out_h(), d.out_w(), d.o};
  return site.Allocate(
      [&] { return std::make_unique<Conv2D>(site.path(), d, !c.no_bias(), site.seed()); });
}

}  // namespace

extern const ModuleKind kConv2DKind = {proto::Module::kConv2D, "conv2d", "Conv",
                                       FlattenUse::kBreaks, BuildConv2D};

}  // namespace qtrain::engine
