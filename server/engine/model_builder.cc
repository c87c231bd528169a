// Model::Build: proto ModelSpec → module tree, with per-example shape inference so that shape
// mistakes surface when the session is created, naming the module path. What each kind means is
// in its file under modules/ (module_kind.h); this file only names, counts and recurses.
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/layers.h"
#include "server/engine/model.h"
#include "server/engine/module_kind.h"

namespace qtrain::engine {
namespace {

class Builder final : public ModuleSite::Tree {
 public:
  // `dry_run`: shape inference and limits only; parameterised modules are not allocated (their
  // places in the tree stay null), so Estimate costs nothing however large the spec.
  Builder(uint64_t seed, bool dry_run) : seed_(seed), dry_run_(dry_run) {}

  uint64_t seed() const override { return seed_; }
  bool dry_run() const override { return dry_run_; }
  bool& tokens() override { return tokens_; }
  void AddActivations(int64_t per_example) override { activations_ += per_example; }
  void AddTable(const std::string& path, SharedTable table) override {
    tables_[path] = std::move(table);
  }
  const SharedTable* FindTable(const std::string& path) const override {
    auto it = tables_.find(path);
    return it == tables_.end() ? nullptr : &it->second;
  }

  absl::Status AddParameters(const std::string& path, int64_t n) override {
    if (n > kMaxParameters || parameters_ + n > kMaxParameters) {
      parameters_ = std::max(parameters_ + std::min(n, kMaxParameters), kMaxParameters + 1);
      return absl::ResourceExhaustedError(absl::StrCat("module \"", path, "\" brings the model to ",
                                                       parameters_, " parameters; the limit is ",
                                                       kMaxParameters));
    }
    parameters_ += n;
    return absl::OkStatus();
  }

  // Builds `m` as a child of `parent` (Linen naming), mapping the per-example `shape`.
  absl::StatusOr<std::unique_ptr<Module>> Build(const proto::Module& m, const std::string& parent,
                                                std::map<std::string, int>& counters, Shape& shape,
                                                int depth) override {
    if (depth > kMaxDepth) {
      return absl::InvalidArgumentError(
          absl::StrCat("module tree deeper than ", kMaxDepth, " at \"", parent, "\""));
    }
    if (++modules_ > kMaxModules) {
      return absl::InvalidArgumentError(absl::StrCat("the model spec has more than ", kMaxModules,
                                                     " modules (at \"", parent, "\")"));
    }
    const ModuleKind* kind = FindModuleKind(m.kind_case());
    if (kind == nullptr) {
      const std::string which =
          m.name().empty() ? absl::StrCat("a module under \"", parent, "\"")
                           : absl::StrCat("module \"", m.name(), "\" under \"", parent, "\"");
      return absl::InvalidArgumentError(
          absl::StrCat(which, " has no kind (set one of ", ModuleKindFields(), ")"));
    }
    std::string name = m.name();
    if (name.empty()) {
      name = absl::StrCat(kind->type_name, "_", counters[kind->type_name]++);
    }
    // A '/' places the module under intermediate path segments (HF BERT's
    // attention.output.LayerNorm beside attention's own children); paths stay unique.
    if (name.find(':') != std::string::npos || name.front() == '/' || name.back() == '/' ||
        name.find("//") != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("module name \"", name, "\" under \"", parent,
                       "\" contains ':' or an empty '/'-separated segment"));
    }
    const std::string path = parent.empty() ? name : parent + "/" + name;
    // Paths name parameters, optimizer slots and statistics: they must be unique.
    if (!paths_.insert(path).second) {
      return absl::InvalidArgumentError(absl::StrCat("module path \"", path,
                                                     "\" is used twice; give modules distinct "
                                                     "names"));
    }
    const Shape in = shape;
    if (kind->flatten == FlattenUse::kBreaks) pending_flatten_.reset();
    ModuleSite site(*this, path, shape, depth, parent, &counters);
    QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> module, kind->build(m, site));
    NoteFlatten(kind->flatten, path, in);
    if (NumElements(shape) > kMaxExampleActivation) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "module \"", path, "\" outputs ", NumElements(shape), " elements per example (shape ",
          ShapeString(shape), "); the limit is ", kMaxExampleActivation));
    }
    activations_ += NumElements(shape);  // < kMaxDepth-bounded sums of values < 2^26 each
    return module;
  }

  int64_t parameters() const { return parameters_; }
  int64_t activations() const { return activations_; }
  std::map<std::string, FlattenedInput> TakeFlattenedInputs() {
    return std::move(flattened_inputs_);
  }

 private:
  // Tracks which linear layer reads a flatten of feature maps (FlattenedInput), in build order,
  // which is execution order: a flatten of (H, W, C) stays pending through activations,
  // dropout and sequential containers until a linear takes it; anything else drops it.
  void NoteFlatten(FlattenUse use, const std::string& path, const Shape& in) {
    switch (use) {
      case FlattenUse::kFlattens:
        pending_flatten_.reset();
        if (in.size() == 3 && in[2] > 1 && in[0] * in[1] > 1) {
          pending_flatten_ = FlattenedInput{path, in};
        }
        return;
      case FlattenUse::kPasses:
        return;
      case FlattenUse::kReads:
        if (pending_flatten_) flattened_inputs_[path] = *pending_flatten_;
        pending_flatten_.reset();
        return;
      case FlattenUse::kBreaks:
        pending_flatten_.reset();
    }
  }

  uint64_t seed_;
  bool dry_run_;
  std::set<std::string> paths_;
  int64_t parameters_ = 0;
  int64_t activations_ = 0;
  int modules_ = 0;
  bool tokens_ = false;  // the current activation is still token ids
  std::optional<FlattenedInput> pending_flatten_;
  std::map<std::string, FlattenedInput> flattened_inputs_;
  std::map<std::string, SharedTable> tables_;
};

// Validates `spec` and builds its module tree with `builder`; the per-example output shape goes
// to `shape`.
absl::StatusOr<std::unique_ptr<Module>> BuildTree(const proto::ModelSpec& spec, Builder& builder,
                                                  Shape& shape) {
  if (spec.input().shape_size() == 0) {
    return absl::InvalidArgumentError("model spec: input.shape is empty (e.g. [784])");
  }
  // Enums arrive as plain integers on the wire: an unknown value must not fall through to a
  // default in one place and be read differently in another.
  if (!proto::InputSpec::Kind_IsValid(spec.input().kind())) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model spec: unknown input.kind ", spec.input().kind(), " (FLOAT = 0, TOKENS = 1)"));
  }
  if (!proto::Loss::Kind_IsValid(spec.loss().kind())) {
    return absl::InvalidArgumentError(absl::StrCat("model spec: unknown loss.kind ",
                                                   spec.loss().kind(),
                                                   " (SOFTMAX_CROSS_ENTROPY = 0, MSE = 1)"));
  }
  shape.assign(spec.input().shape().begin(), spec.input().shape().end());
  for (int64_t d : shape) {
    if (d <= 0 || d > kMaxDim) {
      return absl::InvalidArgumentError(absl::StrCat("model spec: input.shape ", ShapeString(shape),
                                                     " needs dims in [1, ", kMaxDim, "]"));
    }
  }
  if (NumElements(shape) > kMaxExampleActivation) {
    return absl::ResourceExhaustedError(absl::StrCat("model spec: input.shape ", ShapeString(shape),
                                                     " has more than ", kMaxExampleActivation,
                                                     " elements per example"));
  }
  if (spec.input().has_pad_id()) {
    const int64_t pad = spec.input().pad_id();
    if (spec.input().kind() != proto::InputSpec::TOKENS || spec.input().shape_size() != 1 ||
        pad < 0 || pad > INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat("model spec: input.pad_id ", pad,
                       " needs TOKENS input of shape [T] and a value in [0, 2^31)"));
    }
  }
  if (spec.import_ignores_size() > kMaxModules) {
    return absl::InvalidArgumentError(
        absl::StrCat("model spec: more than ", kMaxModules, " import_ignores"));
  }
  for (const std::string& name : spec.import_ignores()) {
    if (name.empty() || name.size() > 1024) {
      return absl::InvalidArgumentError(
          "model spec: import_ignores entries must have 1 to 1024 characters");
    }
  }
  if (spec.hf_config().size() > (1 << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model spec: hf_config has ", spec.hf_config().size(), " bytes (max 1 MiB)"));
  }
  if (!spec.has_body()) {
    return absl::InvalidArgumentError("model spec: body is not set");
  }
  builder.tokens() = spec.input().kind() == proto::InputSpec::TOKENS;
  // The root body is transparent: its children are named at the top level (Dense_0, ...).
  ModuleSite root(builder, "", shape, 0);
  QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> module, root.BuildBody(spec.body()));
  if (builder.tokens()) {
    return absl::InvalidArgumentError(
        "model spec: TOKENS input needs an embedding before any other computation");
  }
  if (spec.loss().kind() == proto::Loss::SOFTMAX_CROSS_ENTROPY && shape.empty()) {
    return absl::InvalidArgumentError("model spec: cross-entropy needs a class axis in the output");
  }
  return module;
}

}  // namespace

absl::Status ModuleSite::Bad(absl::string_view what) const {
  return absl::InvalidArgumentError(absl::StrCat("module \"", path_, "\": ", what));
}

absl::Status ModuleSite::CheckSize(const char* field, int64_t v) const {
  if (v <= 0 || v > kMaxDim) {
    return Bad(absl::StrCat(field, " = ", v, " must be in [1, ", kMaxDim, "]"));
  }
  return absl::OkStatus();
}

absl::Status ModuleSite::AddParameters(std::initializer_list<int64_t> factors, int64_t extra) {
  int64_t n = 1;
  bool overflow = false;
  for (int64_t f : factors) overflow |= __builtin_mul_overflow(n, f, &n);
  overflow |= __builtin_add_overflow(n, extra, &n);
  return tree_.AddParameters(path_, overflow ? kMaxParameters + 1 : n);
}

absl::StatusOr<std::unique_ptr<Module>> ModuleSite::BuildChild(
    const proto::Module& m, std::map<std::string, int>& counters) {
  return tree_.Build(m, path_, counters, shape_, depth_ + 1);
}

absl::StatusOr<std::vector<std::unique_ptr<Module>>> ModuleSite::BuildLayers(
    const proto::Sequential& s) {
  std::vector<std::unique_ptr<Module>> layers;
  std::map<std::string, int> counters;
  for (const proto::Module& layer : s.layers()) {
    QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> m, BuildChild(layer, counters));
    layers.push_back(std::move(m));
  }
  return layers;
}

absl::StatusOr<std::unique_ptr<Module>> ModuleSite::BuildBody(const proto::Module& body) {
  if (body.has_sequential() && body.name().empty()) {
    QTRAIN_ASSIGN_OR_RETURN(std::vector<std::unique_ptr<Module>> layers,
                            BuildLayers(body.sequential()));
    return MakeSequential(path_, std::move(layers));
  }
  std::map<std::string, int> counters;
  return BuildChild(body, counters);
}

absl::StatusOr<std::unique_ptr<Module>> ModuleSite::BuildBodyInParentScope(
    const proto::Module& body) {
  std::map<std::string, int> root_counters;
  std::map<std::string, int>& counters = parent_counters_ ? *parent_counters_ : root_counters;
  if (!(body.has_sequential() && body.name().empty())) {
    return tree_.Build(body, parent_, counters, shape_, depth_ + 1);
  }
  std::vector<std::unique_ptr<Module>> layers;
  for (const proto::Module& layer : body.sequential().layers()) {
    QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Module> m,
                            tree_.Build(layer, parent_, counters, shape_, depth_ + 1));
    layers.push_back(std::move(m));
  }
  return MakeSequential(path_, std::move(layers));
}

absl::StatusOr<ModelFootprint> Model::Estimate(const proto::ModelSpec& spec) {
  Builder builder(/*seed=*/0, /*dry_run=*/true);
  Shape shape;
  QTRAIN_RETURN_IF_ERROR(BuildTree(spec, builder, shape).status());
  ModelFootprint f;
  f.parameters = builder.parameters();
  f.activations_per_example =
      NumElements(Shape(spec.input().shape().begin(), spec.input().shape().end())) +
      builder.activations();
  return f;
}

absl::StatusOr<std::unique_ptr<Model>> Model::Build(const proto::ModelSpec& spec, uint64_t seed) {
  Builder builder(seed, /*dry_run=*/false);
  auto model = std::unique_ptr<Model>(new Model());
  model->spec_ = spec;
  QTRAIN_ASSIGN_OR_RETURN(model->root_, BuildTree(spec, builder, model->output_shape_));
  model->flattened_inputs_ = builder.TakeFlattenedInputs();
  model->root_->CollectParams(&model->params_);
  model->root_->CollectState(&model->state_);
  // Module paths are unique, but a name with '/' can reach a path a module made for its own
  // child (an attention's "query"): the tensors' names must be unique too.
  std::set<std::string> names;
  for (const Param* p : model->params_) {
    if (!names.insert(p->name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("parameter \"", p->name,
                       "\" is defined twice (a module name with '/' reaches a path "
                       "another module uses)"));
    }
  }
  for (const StateTensor* s : model->state_) {
    if (!names.insert(s->name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("state tensor \"", s->name, "\" is defined twice"));
    }
  }
  QTRAIN_RETURN_IF_ERROR(model->SetRules(nullptr));
  return model;
}

}  // namespace qtrain::engine
