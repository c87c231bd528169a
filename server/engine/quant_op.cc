#include "server/engine/quant_op.h"

#include <algorithm>
#include <functional>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/collective.h"

namespace qtrain::engine {
namespace {

// Stochastic-rounding counters: distinct per op and per step.
uint64_t NoiseCounter(const std::string& path, const std::string& op_id, uint64_t step) {
  const uint64_t h = std::hash<std::string>{}(path + ":" + op_id);
  return (h ^ (step * 0x9E3779B97F4A7C15ull)) & ~uint64_t{0xFFFFFFFF};
}

// The shape of `cal`, a calibration of the kernel-view operand of shape `kernel`, in the
// operand's Qwix shape `qwix`: kernel axis 0 folds the leading Qwix axes [0, q - k]; the other
// kernel axes are the trailing Qwix axes. Folded axes are restored when the calibration keeps
// axis 0 (per row / per batch) and are ones when it reduces it.
Shape QwixCalibrationShape(const Shape& cal, const Shape& kernel, const Shape& qwix) {
  const int k = static_cast<int>(kernel.size()), q = static_cast<int>(qwix.size());
  if (k == q) {
    return cal;
  }
  Shape out;
  for (int a = 0; a <= q - k; ++a) {
    out.push_back(cal[0] == 1 ? 1 : qwix[a]);
  }
  for (int a = 1; a < k; ++a) {
    out.push_back(cal[a]);
  }
  return out;
}

Calibration Reshaped(const Calibration& c, const Shape& shape) {
  Calibration out = c;
  for (Tensor* t : {&out.absmax, &out.lo, &out.hi}) {
    if (!t->empty()) {
      t->Reshape(shape);
    }
  }
  return out;
}

// A calibration's tensors moved to the host (the statistics are kept there) or to the
// backend's device (where the quantized op reads them); no copies on a host backend.
absl::StatusOr<Calibration> Moved(Backend& backend, Calibration c, bool to_host) {
  for (Tensor* t : {&c.absmax, &c.lo, &c.hi}) {
    if (t->empty()) continue;
    if (to_host) {
      QTRAIN_ASSIGN_OR_RETURN(*t, backend.ToHost(std::move(*t)));
    } else {
      QTRAIN_ASSIGN_OR_RETURN(*t, backend.ToDevice(*t));
    }
  }
  return c;
}

QDotConfig ForBackward(QDotConfig c, QDotImpl impl, bool skip_dx) {
  c.impl = impl;
  c.skip_dx = skip_dx;
  return c;
}

}  // namespace

absl::Status NoForwardError(const std::string& path) {
  return absl::FailedPreconditionError(
      absl::StrCat("module \"", path, "\": backward without a training forward"));
}

absl::StatusOr<Calibration> ObserveSrq(StepContext& ctx, const std::string& module_path,
                                       const std::string& stat_name, const Tensor& operand,
                                       const Shape& qwix_shape, const ReduceSpec& spec,
                                       const CalibrationMethod& method, QType qtype,
                                       const std::vector<int>& batch_axes) {
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(operand.shape(), spec));
  if (method.kind == CalibrationKind::kEntropy) {
    // Per tensor, with a histogram instead of sums (numerics.md §9).
    if (ctx.collective != nullptr && ctx.update_stats) {
      return absl::InvalidArgumentError(absl::StrCat(
          module_path, " ", stat_name,
          ": entropy calibration is not collected by data-parallel training steps; collect it "
          "with Calibrate (which runs on the session's leader)"));
    }
    auto key = std::make_pair(module_path, stat_name);
    auto it = ctx.stats->find(key);
    if (it == ctx.stats->end() || !it->second.entropy) {
      SrqStat fresh = MakeEntropySrqStat(static_cast<int>(qwix_shape.size()), method.bins);
      it = ctx.stats->insert_or_assign(key, std::move(fresh)).first;
    }
    // The histogram is host state: a device backend's operand is copied down for it.
    QTRAIN_ASSIGN_OR_RETURN(const Tensor host, ctx.backend->ToHost(operand.Share()));
    Calibration used = SrqObserveEntropy(it->second, host, qtype, ctx.update_stats);
    used.absmax.Reshape(Shape(layout.scale_shape.size(), 1));
    return Moved(*ctx.backend, std::move(used), /*to_host=*/false);
  }
  // The statistics (small) live on the host; the calibration is computed where the operand is.
  QTRAIN_ASSIGN_OR_RETURN(Calibration computed,
                          ctx.backend->CalibrateOperand(operand, layout, method, qtype));
  QTRAIN_ASSIGN_OR_RETURN(const Calibration dynamic,
                          Moved(*ctx.backend, std::move(computed), /*to_host=*/true));
  const Tensor& any = dynamic.symmetric ? dynamic.absmax : dynamic.lo;
  const Shape kernel_shape = any.shape();
  const Shape view = QwixCalibrationShape(kernel_shape, operand.shape(), qwix_shape);
  const Calibration dyn_view = Reshaped(dynamic, view);

  Shape stat_shape = view;
  std::vector<bool> seen(view.size(), false);
  for (int a : batch_axes) {
    const int axis = a < 0 ? a + static_cast<int>(view.size()) : a;
    const bool in_range = axis >= 0 && axis < static_cast<int>(view.size());
    if (!in_range || seen[axis]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "act_batch_axes: axis ", a, in_range ? " names an axis twice" : " is out of range",
          " for the operand of ", module_path, " with shape ", ShapeString(qwix_shape)));
    }
    seen[axis] = true;
    stat_shape[axis] = 1;
  }
  auto key = std::make_pair(module_path, stat_name);
  auto it = ctx.stats->find(key);
  if (it == ctx.stats->end()) {
    it = ctx.stats->emplace(key, MakeSrqStat(stat_shape, dynamic.symmetric)).first;
  } else if (it->second.entropy) {  // the rules switched away from entropy: start over
    it->second = MakeSrqStat(stat_shape, dynamic.symmetric);
  }
  std::function<absl::Status(Calibration&)> across_ranks;
  if (ctx.collective != nullptr && ctx.update_stats) {
    // The global batch's mean is the shard means weighted by their shares of the examples; it
    // needs the batch axis among those averaged (else shards' statistics differ in shape).
    if (std::find(batch_axes.begin(), batch_axes.end(), 0) == batch_axes.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          module_path, " ", stat_name,
          ": data-parallel training needs act_batch_axes to include axis 0 (the batch)"));
    }
    across_ranks = [&ctx](Calibration& c) -> absl::Status {
      for (Tensor* t : {&c.absmax, &c.lo, &c.hi}) {
        if (t->empty()) continue;
        QTRAIN_RETURN_IF_ERROR(ctx.collective->AllReduceSum({t}, ctx.shard_weight));
      }
      return absl::OkStatus();
    };
  }
  absl::StatusOr<Calibration> used =
      SrqObserve(it->second, dyn_view, batch_axes, ctx.update_stats, across_ranks);
  if (!used.ok()) {
    return absl::Status(used.status().code(),
                        absl::StrCat(module_path, " ", stat_name, ": ", used.status().message()));
  }
  Calibration out;
  out.symmetric = used->symmetric;
  for (auto [src, dst] :
       {std::pair{&used->absmax, &out.absmax}, {&used->lo, &out.lo}, {&used->hi, &out.hi}}) {
    if (src->empty()) {
      continue;
    }
    *dst = BroadcastScale(*src, view);
    dst->Reshape(kernel_shape);
  }
  return Moved(*ctx.backend, std::move(out), /*to_host=*/false);
}

absl::Status QuantizedDot::Plan(const CompiledRules* rules, int64_t contracting) {
  residuals_.reset();
  if (rules == nullptr) {
    plan_ = OpPlan{};
    return absl::OkStatus();
  }
  QTRAIN_ASSIGN_OR_RETURN(
      plan_, rules->Plan(module_path_, OpShape{op_name_, rhs_is_weight_, contracting, 0}));
  return absl::OkStatus();
}

absl::StatusOr<Tensor> QuantizedDot::Forward(StepContext& ctx, const Tensor& x, const Tensor& w,
                                             const Shape& x_qwix, const Shape& w_qwix) {
  QDotConfig config = plan_.dot;  // float when no rule quantizes this op
  config.impl = ctx.impl;
  std::optional<Calibration> x_static, w_static;
  if (plan_.quantized() && plan_.lhs_static) {
    QTRAIN_ASSIGN_OR_RETURN(
        x_static, ObserveSrq(ctx, module_path_, op_id_ + "_lhs", x, x_qwix,
                             OperandReduceSpec(x.rank(), x.rank() - 1, config, /*lhs=*/true),
                             config.lhs.method, *config.lhs.qtype, plan_.rule->act_batch_axes));
    config.lhs.static_calibration = &*x_static;
  }
  if (plan_.quantized() && plan_.rhs_static) {
    QTRAIN_ASSIGN_OR_RETURN(
        w_static, ObserveSrq(ctx, module_path_, op_id_ + "_rhs", w, w_qwix,
                             OperandReduceSpec(w.rank(), w.rank() - 2, config), config.rhs.method,
                             *config.rhs.qtype, plan_.rule->act_batch_axes));
    config.rhs.static_calibration = &*w_static;
  }
  absl::StatusOr<QDotForwardResult> r = ctx.backend->QuantizedDotForward(x, w, config);
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat(module_path_, " ", op_id_, ": ", r.status().message()));
  }
  if (ctx.training) {
    residuals_ = std::move(r->residuals);
  } else {
    residuals_.reset();
  }
  return std::move(r->y);
}

absl::StatusOr<QDotGradients> QuantizedDot::Backward(StepContext& ctx, const Tensor& x,
                                                     const Tensor& w, const Tensor& g) {
  if (!residuals_) {
    return NoForwardError(module_path_);
  }
  absl::StatusOr<QDotGradients> grads = ctx.backend->QuantizedDotBackward(
      x, w, g, *residuals_, ForBackward(plan_.dot, ctx.impl, skip_dx_), ctx.rng,
      NoiseCounter(module_path_, op_id_, ctx.step));
  residuals_.reset();
  return grads;
}

absl::Status QuantizedConv::Plan(const CompiledRules* rules, const QConvConfig& geometry) {
  residuals_.reset();
  plan_ = OpPlan{};
  if (rules != nullptr) {
    QTRAIN_ASSIGN_OR_RETURN(plan_, rules->Plan(module_path_, OpShape{kConv, true, 0, 0}));
  }
  QConvConfig conv = geometry;
  conv.lhs = plan_.quantized() ? plan_.conv.lhs : QOperand{};
  conv.rhs = plan_.quantized() ? plan_.conv.rhs : QOperand{};
  conv.disable_channelwise = plan_.quantized() && plan_.conv.disable_channelwise;
  plan_.conv = conv;
  return absl::OkStatus();
}

absl::StatusOr<Tensor> QuantizedConv::Forward(StepContext& ctx, const Tensor& x, const Tensor& w) {
  QConvConfig config = plan_.conv;
  config.impl = ctx.impl;
  std::optional<Calibration> x_static;
  if (plan_.quantized() && plan_.lhs_static) {
    ReduceSpec spec;
    spec.axes =
        config.disable_channelwise ? std::vector<int>{0, 1, 2, 3} : std::vector<int>{1, 2, 3};
    QTRAIN_ASSIGN_OR_RETURN(
        x_static, ObserveSrq(ctx, module_path_, std::string(kOpId) + "_lhs", x, x.shape(), spec,
                             config.lhs.method, *config.lhs.qtype, plan_.rule->act_batch_axes));
    config.lhs.static_calibration = &*x_static;
  }
  config.keep_residuals = ctx.training;
  absl::StatusOr<QConvForwardResult> r = ctx.backend->QuantizedConvForward(x, w, config);
  if (!r.ok()) {
    return absl::Status(r.status().code(),
                        absl::StrCat(module_path_, " ", kOpId, ": ", r.status().message()));
  }
  if (ctx.training) {
    residuals_ = std::move(r->residuals);
  } else {
    residuals_.reset();
  }
  return std::move(r->y);
}

absl::StatusOr<QDotGradients> QuantizedConv::Backward(StepContext& ctx, const Tensor& g) {
  if (!residuals_) {
    return NoForwardError(module_path_);
  }
  QConvConfig config = plan_.conv;
  config.skip_dx = skip_dx_;
  absl::StatusOr<QDotGradients> grads = ctx.backend->QuantizedConvBackward(g, *residuals_, config);
  residuals_.reset();
  return grads;
}

}  // namespace qtrain::engine
