// Helpers shared by the module kinds in this directory: input checks, parameters, bias loops
// and window geometry. Not a public interface of the engine.
#pragma once

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend/backend.h"
#include "kernels/tensor.h"
#include "server/engine/module.h"
#include "server/engine/module_kind.h"
#include "server/engine/onnx_graph.h"

namespace qtrain::engine {

// InvalidArgument unless `x` is f32 (and of rank `rank` when rank > 0).
absl::Status CheckF32(const std::string& path, const Tensor& x, int rank);
// InvalidArgument unless `x` is f32, of rank >= min_rank, with `features` in the last axis.
absl::Status CheckFeatures(const std::string& path, const Tensor& x, int64_t features,
                           int min_rank);

// A parameter named `name` holding `value`, its gradient zeroed; PyTorch calls it `torch_leaf`.
Param MakeParam(const std::string& name, Tensor value, std::string torch_leaf);
// PyTorch names `p` by `module_path` itself (an nn.Parameter attribute of the parent module,
// such as torchvision ViT's class_token), not by a leaf under it.
void TorchNameIsModulePath(Param& p, const std::string& module_path);
// InvalidArgument unless `x` is f32 (N, tokens, d).
absl::Status CheckTokens(const std::string& path, const Tensor& x, int64_t tokens, int64_t d);

// A normalisation over the last axis with `epsilon` (0: the default 1e-6): checks the shape and
// epsilon, counts the scale and bias, and returns the epsilon to use.
absl::StatusOr<float> NormEpsilon(ModuleSite& site, float epsilon);

// The largest explicit padding of one side.
inline constexpr int64_t kMaxPadding = 1 << 16;

// The (before, after) padding of one spatial axis of a convolution or pool: none for VALID;
// for SAME (Flax's) enough for ceil(in / s) outputs, the odd one after. k is the window's
// extent (a dilated kernel's span).
std::pair<int64_t, int64_t> WindowPadding(int64_t in, int64_t k, int64_t s, bool same);

// Window, strides and padding of a convolution or pooling descriptor (ConvDesc or PoolDesc,
// whose h, w and any dilation are set), each size checked: `explicit_padding` [top, bottom, left,
// right] when given (model.proto), else SAME / VALID.
template <typename Desc, typename Pads>
absl::Status SetWindow(const ModuleSite& site, const char* field, int64_t kh, int64_t kw,
                       int64_t sh, int64_t sw, bool same, const Pads& explicit_padding, Desc& d) {
  for (int64_t v : {kh, kw}) {
    absl::Status s = site.CheckSize(field, v);
    if (!s.ok()) return s;
  }
  for (int64_t v : {sh, sw}) {
    absl::Status s = site.CheckSize("strides", v);
    if (!s.ok()) return s;
  }
  d.kh = kh;
  d.kw = kw;
  d.stride_h = sh;
  d.stride_w = sw;
  if (explicit_padding.size() == 0) {
    std::tie(d.pad_top, d.pad_bottom) = WindowPadding(d.h, d.span_h(), sh, same);
    std::tie(d.pad_left, d.pad_right) = WindowPadding(d.w, d.span_w(), sw, same);
    return absl::OkStatus();
  }
  if (explicit_padding.size() != 4) {
    return site.Bad("explicit_padding must be [top, bottom, left, right] or unset");
  }
  for (int64_t p : explicit_padding) {
    if (p < 0 || p > kMaxPadding) {
      return site.Bad(absl::StrCat("explicit_padding ", p, " must be in [0, ", kMaxPadding, "]"));
    }
  }
  d.pad_top = explicit_padding[0];
  d.pad_bottom = explicit_padding[1];
  d.pad_left = explicit_padding[2];
  d.pad_right = explicit_padding[3];
  return absl::OkStatus();
}

// ONNX Conv / MaxPool / AveragePool attributes of a window descriptor.
template <typename Desc>
std::vector<OnnxGraph::Attr> WindowAttrs(const Desc& d) {
  return {OnnxGraph::IntsAttr("kernel_shape", {d.kh, d.kw}),
          OnnxGraph::IntsAttr("strides", {d.stride_h, d.stride_w}),
          OnnxGraph::IntsAttr("pads", {d.pad_top, d.pad_left, d.pad_bottom, d.pad_right})};
}

}  // namespace qtrain::engine
