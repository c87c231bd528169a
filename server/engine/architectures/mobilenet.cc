// torchvision's MobileNetV2 (torchvision/models/mobilenetv2.py): inverted residual blocks of a
// 1×1 expansion, a 3×3 depthwise convolution and a 1×1 linear projection, each followed by
// BatchNorm (ReLU6 after the first two). Module names as its state dict has them.
#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures.h"

namespace qtrain::engine::arch {
namespace {

using Kind = proto::Activation;

// torchvision's _make_divisible: v rounded to the nearest multiple of `divisor` (at least
// `divisor`), never more than 10% below v.
int64_t MakeDivisible(double v, int64_t divisor) {
  int64_t rounded = std::max(
      divisor, static_cast<int64_t>(v + static_cast<double>(divisor) / 2) / divisor * divisor);
  if (static_cast<double>(rounded) < 0.9 * v) rounded += divisor;
  return rounded;
}

// Conv2dNormActivation: conv "0" (no bias, padding (k − 1) / 2), BatchNorm "1", ReLU6.
proto::Module ConvBnRelu6(const std::string& name, int64_t features, int64_t k, int64_t stride,
                          int64_t groups) {
  return Named(name, Seq({Named("0", Conv(features, k, stride, (k - 1) / 2, false, groups)),
                          Named("1", BatchNorm()), Act(Kind::RELU6)}));
}

// features.{index}: an InvertedResidual from `in` to `out` channels; a residual when the shape
// is kept.
proto::Module InvertedResidual(int index, int64_t in, int64_t out, int64_t stride, int64_t t) {
  const int64_t hidden = static_cast<int64_t>(std::llround(static_cast<double>(in * t)));
  std::vector<proto::Module> layers;
  if (t != 1) layers.push_back(ConvBnRelu6("0", hidden, 1, 1, 1));
  const int next = static_cast<int>(layers.size());
  layers.push_back(ConvBnRelu6(absl::StrCat(next), hidden, 3, stride, hidden));
  layers.push_back(Named(absl::StrCat(next + 1), Conv(out, 1, 1, 0, false)));
  layers.push_back(Named(absl::StrCat(next + 2), BatchNorm()));
  proto::Module conv = Named("conv", Seq(std::move(layers)));
  if (stride == 1 && in == out) {
    proto::Module block;
    *block.mutable_residual()->mutable_body() = std::move(conv);
    return Named(absl::StrCat(index), std::move(block));
  }
  return Named(absl::StrCat(index), Seq({std::move(conv)}));
}

}  // namespace

absl::StatusOr<proto::ModelSpec> TorchvisionMobilenetV2(Options& options) {
  QTRAIN_ASSIGN_OR_RETURN(const int64_t classes, options.Int("num_classes", 1000, 1, 1 << 20));
  QTRAIN_ASSIGN_OR_RETURN(const double width, options.Real("width_mult", 1.0, 0.05, 4.0));
  QTRAIN_ASSIGN_OR_RETURN(const int64_t round, options.Int("round_nearest", 8, 1, 64));
  QTRAIN_ASSIGN_OR_RETURN(const double dropout, options.Real("dropout", 0.2, 0.0, 0.99));
  QTRAIN_ASSIGN_OR_RETURN(const std::vector<int64_t> input, options.InputShape(224));
  // t (expansion), c (channels), n (blocks), s (stride of the first)
  const int64_t settings[][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                 {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  proto::ModelSpec spec;
  for (int64_t d : input) spec.mutable_input()->add_shape(d);
  proto::Module features;
  features.set_name("features");
  proto::Sequential* f = features.mutable_sequential();
  int64_t in = MakeDivisible(32 * width, round);
  const int64_t last = MakeDivisible(1280 * std::max(1.0, width), round);
  *f->add_layers() = ConvBnRelu6("0", in, 3, 2, 1);
  int index = 1;
  for (const auto& [t, c, n, s] : settings) {
    const int64_t out = MakeDivisible(static_cast<double>(c) * width, round);
    for (int64_t i = 0; i < n; ++i) {
      *f->add_layers() = InvertedResidual(index++, in, out, i == 0 ? s : 1, t);
      in = out;
    }
  }
  *f->add_layers() = ConvBnRelu6(absl::StrCat(index), last, 1, 1, 1);
  proto::Sequential* root = spec.mutable_body()->mutable_sequential();
  *root->add_layers() = std::move(features);
  proto::Module avg;
  avg.mutable_pool()->set_kind(proto::Pool::GLOBAL_AVG);
  *root->add_layers() = std::move(avg);
  proto::Module drop;
  drop.mutable_dropout()->set_rate(static_cast<float>(dropout));
  *root->add_layers() =
      Named("classifier", Seq({Named("0", std::move(drop)), Named("1", Dense(classes))}));
  return spec;
}

}  // namespace qtrain::engine::arch
