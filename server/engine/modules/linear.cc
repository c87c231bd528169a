// Linear (Flax Dense, torch.nn.Linear): y = x · kernel (+ bias) over the last axis; kernel
// (in, out), PyTorch's weight (out, in) (HF Conv1D's (in, out) with conv1d_layout). Quantizable
// op: dot_general0. Tied to an embedding (HF's tie_word_embeddings), the kernel is the
// embedding's (out, in) table transposed for each step and its gradient is added to the table's.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/init.h"
#include "server/engine/layers.h"
#include "server/engine/modules/common.h"
#include "server/engine/quant_op.h"

namespace qtrain::engine {
namespace {

class Linear final : public Module {
 public:
  Linear(std::string path, int64_t in, int64_t out, bool bias, uint64_t seed)
      : Module(std::move(path)),
        in_(in),
        out_(out),
        dot_(this->path(), kDotGeneral, "dot_general0", true) {
    kernel_ = MakeParam(ChildPath("kernel"), LecunNormal({in, out}, in, seed, ChildPath("kernel")),
                        "weight");
    kernel_.torch_layout = TorchLayout::kLinearKernel;
    kernel_.accumulates = false;
    if (bias) {
      bias_ = std::make_unique<Param>(MakeParam(ChildPath("bias"), Constant({out}, 0.0f), "bias"));
    }
  }

  // Shares `table` (out, in), owned by an embedding module that outlives this layer.
  void TieTo(Param* table) {
    tied_ = table;
    kernel_.value = Tensor();  // the table is the only copy between steps
  }

  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x) override {
    QTRAIN_RETURN_IF_ERROR(CheckFeatures(path(), x, in_, 2));
    if (tied_) {
      QTRAIN_ASSIGN_OR_RETURN(kernel_.value, ctx.backend->Transposed(tied_->value));
    }
    Tensor rows = x.Share();  // kept for the backward; nobody writes x
    rows.Reshape({x.numel() / in_, in_});
    QTRAIN_ASSIGN_OR_RETURN(Tensor y, dot_.Forward(ctx, rows, kernel_.value, x.shape(), {}));
    if (bias_) {
      QTRAIN_RETURN_IF_ERROR(ctx.backend->AddBias(y, bias_->value, out_));
    }
    Shape out_shape = x.shape();
    out_shape.back() = out_;
    y.Reshape(out_shape);
    if (ctx.training) {
      input_ = std::move(rows);
    } else {
      input_ = Tensor();
      if (tied_) kernel_.value = Tensor();
    }
    return y;
  }

  absl::StatusOr<Tensor> Backward(StepContext& ctx, const Tensor& dy) override {
    if (input_.empty()) {
      return NoForwardError(path());
    }
    Tensor g = dy.Share();
    g.Reshape({dy.numel() / out_, out_});
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients grads, dot_.Backward(ctx, input_, kernel_.value, g));
    if (tied_) {  // the table's gradient accumulates (the embedding adds its own)
      QTRAIN_ASSIGN_OR_RETURN(Tensor dt, ctx.backend->Transposed(grads.dw));
      QTRAIN_RETURN_IF_ERROR(ctx.backend->AddInto(tied_->grad, dt));
      kernel_.value = Tensor();
    } else {
      kernel_.grad = std::move(grads.dw);  // each parameter is used by one op per step
    }
    if (bias_) {
      QTRAIN_RETURN_IF_ERROR(ctx.backend->AccumulateBiasGrad(g, bias_->grad, out_));
    }
    input_ = Tensor();
    if (grads.dx.empty()) {
      return Tensor();
    }
    Shape in_shape = dy.shape();
    in_shape.back() = in_;
    grads.dx.Reshape(in_shape);
    return std::move(grads.dx);
  }

  void CollectParams(std::vector<Param*>* out) override {
    if (!tied_) out->push_back(&kernel_);
    if (bias_) {
      out->push_back(bias_.get());
    }
  }
  // A checkpoint may hold the tied weight under this layer's name too (a state dict does).
  void CollectTorchBuffers(std::vector<std::string>* out) override {
    if (tied_) out->push_back(path() + "/weight");
  }
  absl::Status PlanOps(const CompiledRules* rules) override { return dot_.Plan(rules, in_); }
  void SetInputGradNeeded(bool needed) override { dot_.set_skip_dx(!needed); }
  void ReportOps(std::vector<std::pair<int, std::string>>* out) override {
    out->emplace_back(dot_.rule_index(), path() + ":" + dot_.op_id());
  }
  absl::StatusOr<std::string> ExportOnnx(OnnxGraph& g, const std::string& x) override {
    QTRAIN_ASSIGN_OR_RETURN(std::string in,
                            g.QdqActivation(path(), dot_.op_id(), dot_.op_id() + "_lhs", x));
    Param tied;  // the tied table as this layer's kernel
    if (tied_) {
      tied.name = kernel_.name;
      tied.value = g.Transposed(tied_->value);
    }
    QTRAIN_ASSIGN_OR_RETURN(std::string w, g.Weight(path(), dot_.op_id(), tied_ ? tied : kernel_,
                                                    OnnxGraph::KernelLayout::kLinear));
    std::string y = g.Op("MatMul", {in, w}, path());
    if (bias_) y = g.Op("Add", {y, g.Param(*bias_)}, path());
    return y;
  }

 private:
  int64_t in_, out_;
  QuantizedDot dot_;
  Param* tied_ = nullptr;  // Linear.tied_to's table, owned by its embedding
  Param kernel_;
  std::unique_ptr<Param> bias_;
  Tensor input_;  // (M, in), kept by a training forward
};

absl::StatusOr<std::unique_ptr<Module>> BuildLinear(const proto::Module& m, ModuleSite& site) {
  const auto& l = m.linear();
  Shape& shape = site.shape();
  if (shape.empty()) {
    return site.Bad("linear needs an input with a feature axis");
  }
  QTRAIN_RETURN_IF_ERROR(site.CheckSize("features", l.features()));
  const int64_t in = shape.back();
  const SharedTable* table = nullptr;
  if (!l.tied_to().empty()) {
    table = site.FindTable(l.tied_to());
    if (table == nullptr) {
      return site.Bad(absl::StrCat("tied_to \"", l.tied_to(),
                                   "\" is not an embedding built before this layer"));
    }
    if (table->shape != Shape{l.features(), in}) {
      return site.Bad(absl::StrCat("tied_to \"", l.tied_to(), "\" has a ",
                                   ShapeString(table->shape), " table; this layer needs [",
                                   l.features(), ", ", in, "]"));
    }
    if (l.conv1d_layout()) return site.Bad("tied_to takes no conv1d_layout");
  }
  QTRAIN_RETURN_IF_ERROR(site.AddParameters({table ? 0 : in, l.features()}, l.features()));
  shape.back() = l.features();
  return site.Allocate([&] {
    auto linear =
        std::make_unique<Linear>(site.path(), in, l.features(), !l.no_bias(), site.seed());
    if (table) linear->TieTo(table->param);
    if (l.conv1d_layout()) UseConv1dLayout(*linear);
    return linear;
  });
}

}  // namespace

std::unique_ptr<Module> MakeLinear(std::string path, int64_t in, int64_t out, bool bias,
                                   uint64_t seed) {
  return std::make_unique<Linear>(std::move(path), in, out, bias, seed);
}

void UseConv1dLayout(Module& linear) {
  std::vector<Param*> params;
  linear.CollectParams(&params);
  for (Param* p : params) {
    if (p->torch_layout == TorchLayout::kLinearKernel) p->torch_layout = TorchLayout::kSame;
  }
}

extern const ModuleKind kLinearKind = {proto::Module::kLinear, "linear", "Dense",
                                       FlattenUse::kReads, BuildLinear};

}  // namespace qtrain::engine
