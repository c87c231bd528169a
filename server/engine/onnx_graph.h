// OnnxGraph: what a module writes its inference graph into (Module::ExportOnnx). The store's
// exporter implements it and owns the ONNX protobuf; modules say which nodes they are, in NHWC
// values with a symbolic batch axis. Values are named by strings the graph hands out.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"
#include "server/engine/module.h"

namespace qtrain::engine {

class OnnxGraph {
 public:
  // One node attribute: an int, a list of ints or a float.
  struct Attr {
    std::string name;
    enum class Type { kInt, kInts, kFloat } type;
    std::vector<int64_t> ints;
    float f = 0.0f;
  };
  static Attr IntAttr(std::string name, int64_t v) {
    return {std::move(name), Attr::Type::kInt, {v}};
  }
  static Attr IntsAttr(std::string name, std::vector<int64_t> v) {
    return {std::move(name), Attr::Type::kInts, std::move(v)};
  }
  static Attr FloatAttr(std::string name, float v) {
    return {std::move(name), Attr::Type::kFloat, {}, v};
  }

  // The layout a kernel is exported in.
  enum class KernelLayout {
    kLinear,  // (in, out) for MatMul, rows in PyTorch's order after a flatten of feature maps
    kConv,    // HWIO → OIHW
  };

  virtual ~OnnxGraph() = default;

  // A node `op` reading `inputs`; returns its output's fresh name, derived from `base`.
  virtual std::string Op(const std::string& op, const std::vector<std::string>& inputs,
                         const std::string& base, const std::vector<Attr>& attrs = {}) = 0;
  // An initializer holding `t` (f32, s32 or s8) under a fresh name derived from `base`.
  virtual std::string Constant(const std::string& base, const Tensor& t) = 0;
  // An int64 vector initializer (shapes for Reshape).
  virtual std::string Ints(const std::string& base, const std::vector<int64_t>& v) = 0;
  // A float parameter as an initializer named by its parameter name.
  virtual std::string Param(const engine::Param& p) = 0;
  // A (rows, cols) parameter value as (cols, rows): the store reads parameter memory (a tied
  // embedding exported as its output layer's kernel).
  virtual Tensor Transposed(const Tensor& value) = 0;
  // `module`'s op `op_id`'s kernel as the graph uses it: the float parameter, or int8 behind
  // DequantizeLinear when a rule quantizes the op's weights.
  virtual absl::StatusOr<std::string> Weight(const std::string& module, const std::string& op_id,
                                             const engine::Param& kernel, KernelLayout layout) = 0;
  // Activation `x`, operand `stat` ("dot_general0_lhs") of `module`'s op `op_id`, through
  // QuantizeLinear → DequantizeLinear with its static scales when a rule quantizes the op with
  // static scales; `x` itself otherwise. InvalidArgument when ONNX cannot express the scales.
  virtual absl::StatusOr<std::string> QdqActivation(const std::string& module,
                                                    const std::string& op_id,
                                                    const std::string& stat,
                                                    const std::string& x) = 0;
  // Whether the flatten module `flatten_path` feeds a linear layer (FlattenedInput), whose
  // input the graph then flattens in PyTorch's (c, h, w) order.
  virtual bool FlattensForLinear(const std::string& flatten_path) const = 0;

  std::string Scalar(const std::string& base, float v) {
    return Constant(base, Tensor::FromFloats({}, {v}));
  }
  std::string Transpose(const std::string& x, const std::vector<int64_t>& perm,
                        const std::string& base) {
    return Op("Transpose", {x}, base, {IntsAttr("perm", perm)});
  }
  std::string ToNchw(const std::string& x, const std::string& base) {
    return Transpose(x, {0, 3, 1, 2}, base + "/nchw");
  }
  std::string ToNhwc(const std::string& x, const std::string& base) {
    return Transpose(x, {0, 2, 3, 1}, base + "/nhwc");
  }
};

}  // namespace qtrain::engine
