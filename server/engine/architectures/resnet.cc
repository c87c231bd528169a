// torchvision's ResNet (torchvision/models/resnet.py, v1.5: the stride sits on the 3×3 conv of a
// Bottleneck): module names and structure as its state dict has them.
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/architectures.h"

namespace qtrain::engine::arch {
namespace {

using Kind = proto::Activation;

// One block `index` of a stage: a residual (body, optional `downsample` shortcut) then ReLU
// after the add. The residual carries the block's name so that its layers are
// "layer1.0.conv1" etc.
void AddBlock(proto::Sequential* stage, int index, bool bottleneck, int64_t in, int64_t planes,
              int64_t stride) {
  const int64_t expansion = bottleneck ? 4 : 1, out = planes * expansion;
  std::vector<proto::Module> body;
  if (bottleneck) {
    body = {Named("conv1", Conv(planes, 1, 1, 0, false)),
            Named("bn1", BatchNorm()),
            Act(Kind::RELU),
            Named("conv2", Conv(planes, 3, stride, 1, false)),
            Named("bn2", BatchNorm()),
            Act(Kind::RELU),
            Named("conv3", Conv(out, 1, 1, 0, false)),
            Named("bn3", BatchNorm())};
  } else {
    body = {Named("conv1", Conv(planes, 3, stride, 1, false)), Named("bn1", BatchNorm()),
            Act(Kind::RELU), Named("conv2", Conv(planes, 3, 1, 1, false)),
            Named("bn2", BatchNorm())};
  }
  proto::Module block;
  block.set_name(absl::StrCat(index));
  *block.mutable_residual()->mutable_body() = Seq(std::move(body));
  if (stride != 1 || in != out) {
    *block.mutable_residual()->mutable_shortcut() = Named(
        "downsample", Seq({Named("0", Conv(out, 1, stride, 0, false)), Named("1", BatchNorm())}));
  }
  *stage->add_layers() = std::move(block);
  *stage->add_layers() = Act(Kind::RELU);
}

}  // namespace

absl::StatusOr<proto::ModelSpec> TorchvisionResnet(int depth, Options& options) {
  QTRAIN_ASSIGN_OR_RETURN(const int64_t classes, options.Int("num_classes", 1000, 1, 1 << 20));
  QTRAIN_ASSIGN_OR_RETURN(const std::vector<int64_t> input, options.InputShape(224));
  const bool bottleneck = depth >= 50;
  const int blocks[][4] = {{2, 2, 2, 2}, {3, 4, 6, 3}, {3, 4, 6, 3}};
  const int* counts = blocks[depth == 18 ? 0 : depth == 34 ? 1 : 2];
  proto::ModelSpec spec;
  for (int64_t d : input) spec.mutable_input()->add_shape(d);
  proto::Sequential* root = spec.mutable_body()->mutable_sequential();
  *root->add_layers() = Named("conv1", Conv(64, 7, 2, 3, false));
  *root->add_layers() = Named("bn1", BatchNorm());
  *root->add_layers() = Act(Kind::RELU);
  proto::Module pool;  // maxpool 3×3 stride 2 padding 1 (padding never wins a max)
  pool.mutable_pool()->set_kind(proto::Pool::MAX);
  for (int i = 0; i < 2; ++i) {
    pool.mutable_pool()->add_window(3);
    pool.mutable_pool()->add_strides(2);
  }
  for (int i = 0; i < 4; ++i) pool.mutable_pool()->add_explicit_padding(1);
  *root->add_layers() = std::move(pool);
  int64_t in = 64;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t planes = int64_t{64} << stage;
    proto::Module layer;
    layer.set_name(absl::StrCat("layer", stage + 1));
    for (int j = 0; j < counts[stage]; ++j) {
      AddBlock(layer.mutable_sequential(), j, bottleneck, in, planes, j == 0 && stage > 0 ? 2 : 1);
      in = planes * (bottleneck ? 4 : 1);
    }
    *root->add_layers() = std::move(layer);
  }
  proto::Module avg;
  avg.mutable_pool()->set_kind(proto::Pool::GLOBAL_AVG);
  *root->add_layers() = std::move(avg);
  *root->add_layers() = Named("fc", Dense(classes));
  return spec;
}

}  // namespace qtrain::engine::arch
