// QuantizedDot / QuantizedConv: one quantizable op of a module (Linear's dot_general0,
// attention's einsum0/1, Conv2D's conv_general_dilated0) with its rule plan, SRQ statistics
// and the residuals its backward needs. Owned by the module; used on the session's executor
// thread only.
#pragma once

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "kernels/qconv.h"
#include "kernels/qdot.h"
#include "server/engine/module.h"
#include "server/engine/rules.h"

namespace qtrain::engine {

// SRQ (numerics.md §6) for one activation operand as the kernel sees it (`operand`, flattened
// to rows), whose Qwix shape is `qwix_shape` (e.g. (B, T, D) for a (B·T, D) operand). Computes
// the dynamic calibration over `spec`, updates the statistic (module_path, stat_name) when the
// context says so, and returns the calibration the kernel must use, in the operand's scale
// layout. InvalidArgument for a batch whose statistic shape differs from the collected one.
absl::StatusOr<Calibration> ObserveSrq(StepContext& ctx, const std::string& module_path,
                                       const std::string& stat_name, const Tensor& operand,
                                       const Shape& qwix_shape, const ReduceSpec& spec,
                                       const CalibrationMethod& method, QType qtype,
                                       const std::vector<int>& batch_axes);

class QuantizedDot {
 public:
  // `op_name` is kDotGeneral or kEinsum; `op_id` e.g. "dot_general0".
  QuantizedDot(std::string module_path, absl::string_view op_name, std::string op_id,
               bool rhs_is_weight)
      : module_path_(std::move(module_path)),
        op_name_(op_name),
        op_id_(std::move(op_id)),
        rhs_is_weight_(rhs_is_weight) {}

  // Resolves the rule for contracting dim K. Errors as CompiledRules::Plan.
  absl::Status Plan(const CompiledRules* rules, int64_t contracting);

  // y = x · w. x (M,K) or (B,M,K), w (K,N) or (B,K,N). `x_qwix` / `w_qwix` are the operands'
  // Qwix shapes for SRQ statistics (w_qwix only used for act×act einsums).
  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x, const Tensor& w,
                                 const Shape& x_qwix, const Shape& w_qwix);
  // Gradients for g; x and w must be the operands of the last Forward.
  absl::StatusOr<QDotGradients> Backward(StepContext& ctx, const Tensor& x, const Tensor& w,
                                         const Tensor& g);

  int rule_index() const { return plan_.rule ? plan_.rule->index : -1; }
  const std::string& op_id() const { return op_id_; }
  void set_skip_dx(bool skip) { skip_dx_ = skip; }

 private:
  std::string module_path_;
  absl::string_view op_name_;
  std::string op_id_;
  bool rhs_is_weight_;
  OpPlan plan_;
  std::optional<QDotResiduals> residuals_;
  bool skip_dx_ = false;
};

class QuantizedConv {
 public:
  explicit QuantizedConv(std::string module_path) : module_path_(std::move(module_path)) {}

  // `geometry` carries strides and padding (its lhs/rhs are replaced by the rule's).
  absl::Status Plan(const CompiledRules* rules, const QConvConfig& geometry);
  absl::StatusOr<Tensor> Forward(StepContext& ctx, const Tensor& x, const Tensor& w);
  absl::StatusOr<QDotGradients> Backward(StepContext& ctx, const Tensor& g);

  int rule_index() const { return plan_.rule ? plan_.rule->index : -1; }
  static constexpr const char* kOpId = "conv_general_dilated0";
  void set_skip_dx(bool skip) { skip_dx_ = skip; }

 private:
  std::string module_path_;
  OpPlan plan_;
  std::optional<QConvResiduals> residuals_;
  bool skip_dx_ = false;
};

}  // namespace qtrain::engine
