#include "server/engine/architectures.h"

#include <cmath>
#include <functional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "kernels/status_macros.h"

namespace qtrain::engine {
namespace {

using Builder = std::function<absl::StatusOr<proto::ModelSpec>(arch::Options&)>;

Builder Vit(arch::VitDefaults d) {
  return [d](arch::Options& o) { return arch::TorchvisionVit(d, o); };
}

const std::map<std::string, Builder>& Builders() {
  static const auto* builders = new std::map<std::string, Builder>{
      {"hf", arch::HfModel},
      {"torchvision:resnet18", [](arch::Options& o) { return arch::TorchvisionResnet(18, o); }},
      {"torchvision:resnet34", [](arch::Options& o) { return arch::TorchvisionResnet(34, o); }},
      {"torchvision:resnet50", [](arch::Options& o) { return arch::TorchvisionResnet(50, o); }},
      {"torchvision:mobilenet_v2", arch::TorchvisionMobilenetV2},
      {"torchvision:vit_b_16", Vit({16, 12, 12, 768, 3072})},
      {"torchvision:vit_b_32", Vit({32, 12, 12, 768, 3072})},
      {"torchvision:vit_l_16", Vit({16, 24, 16, 1024, 4096})},
      {"torchvision:vit_l_32", Vit({32, 24, 16, 1024, 4096})},
      {"torchvision:vit_h_14", Vit({14, 32, 16, 1280, 5120})},
  };
  return *builders;
}

}  // namespace

std::vector<std::string> ArchitectureNames() {
  std::vector<std::string> names;
  for (const auto& [name, builder] : Builders()) names.push_back(name);
  return names;
}

absl::StatusOr<proto::ModelSpec> ExpandArchitecture(const proto::Architecture& a) {
  auto it = Builders().find(a.name());
  if (it == Builders().end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown architecture \"", a.name(),
                     "\" (known: ", absl::StrJoin(ArchitectureNames(), ", "), ")"));
  }
  if (a.name() != "hf" && !a.hf_config().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("architecture \"", a.name(), "\" takes no hf_config (only \"hf\" does)"));
  }
  arch::Options options(a.name(), a);
  QTRAIN_ASSIGN_OR_RETURN(proto::ModelSpec spec, it->second(options));
  QTRAIN_RETURN_IF_ERROR(options.CheckAllRead());
  if (spec.name().empty()) spec.set_name(a.name());
  return spec;
}

namespace arch {

Options::Options(std::string arch, const proto::Architecture& a)
    : arch_(std::move(arch)),
      options_(a.options().begin(), a.options().end()),
      input_shape_(a.input_shape().begin(), a.input_shape().end()),
      hf_config_(a.hf_config()) {}

absl::StatusOr<double> Options::Real(const std::string& name, double def, double lo, double hi) {
  read_[name] = true;
  auto it = options_.find(name);
  if (it == options_.end()) return def;
  if (!(it->second >= lo && it->second <= hi)) {
    return absl::InvalidArgumentError(absl::StrCat(arch_, ": option ", name, " = ", it->second,
                                                   " must be in [", lo, ", ", hi, "]"));
  }
  return it->second;
}

absl::StatusOr<int64_t> Options::Int(const std::string& name, int64_t def, int64_t lo, int64_t hi) {
  QTRAIN_ASSIGN_OR_RETURN(const double v, Real(name, static_cast<double>(def),
                                               static_cast<double>(lo), static_cast<double>(hi)));
  if (v != std::floor(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat(arch_, ": option ", name, " = ", v, " must be a whole number"));
  }
  return static_cast<int64_t>(v);
}

absl::StatusOr<std::vector<int64_t>> Options::InputShape(int64_t def_hw) {
  if (input_shape_.empty()) return std::vector<int64_t>{def_hw, def_hw, 3};
  if (input_shape_.size() != 3) {
    return absl::InvalidArgumentError(
        absl::StrCat(arch_, ": input_shape must be [H, W, C], got ", input_shape_.size(), " dims"));
  }
  for (int64_t d : input_shape_) {
    if (d < 1 || d > 4096) {
      return absl::InvalidArgumentError(
          absl::StrCat(arch_, ": input_shape dims must be in [1, 4096], got ", d));
    }
  }
  return input_shape_;
}

absl::Status Options::CheckAllRead() const {
  std::vector<std::string> unknown, known;
  for (const auto& [name, value] : options_) {
    if (!read_.count(name)) unknown.push_back(name);
  }
  for (const auto& [name, read] : read_) known.push_back(name);
  if (unknown.empty()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(arch_, ": unknown option", unknown.size() > 1 ? "s " : " ",
                   absl::StrJoin(unknown, ", "), " (it takes ", absl::StrJoin(known, ", "), ")"));
}

proto::Module Named(const std::string& name, proto::Module m) {
  m.set_name(name);
  return m;
}

proto::Module Conv(int64_t features, int64_t k, int64_t stride, int64_t pad, bool bias,
                   int64_t groups) {
  proto::Module m;
  proto::Conv2D* c = m.mutable_conv2d();
  c->set_features(features);
  for (int i = 0; i < 2; ++i) {
    c->add_kernel_size(k);
    c->add_strides(stride);
  }
  for (int i = 0; i < 4; ++i) c->add_explicit_padding(pad);
  c->set_no_bias(!bias);
  if (groups != 1) c->set_feature_group_count(groups);
  return m;
}

proto::Module BatchNorm(float eps) {
  proto::Module m;
  m.mutable_batch_norm()->set_epsilon(eps);
  return m;
}

proto::Module Act(proto::Activation::Kind kind) {
  proto::Module m;
  m.mutable_activation()->set_kind(kind);
  return m;
}

proto::Module Seq(std::vector<proto::Module> layers) {
  proto::Module m;
  for (proto::Module& l : layers) *m.mutable_sequential()->add_layers() = std::move(l);
  return m;
}

proto::Module Dense(int64_t features, bool bias) {
  proto::Module m;
  m.mutable_linear()->set_features(features);
  m.mutable_linear()->set_no_bias(!bias);
  return m;
}

proto::Module TiedDense(int64_t features, const std::string& table) {
  proto::Module m = Dense(features, false);
  m.mutable_linear()->set_tied_to(table);
  return m;
}

proto::Module Conv1D(int64_t features) {
  proto::Module m = Dense(features);
  m.mutable_linear()->set_conv1d_layout(true);
  return m;
}

}  // namespace arch
}  // namespace qtrain::engine
