// Module kinds: what one proto::Module kind means to the engine. Each kind lives in one file
// under server/engine/modules/ — its Module class, its build (validation, shape inference,
// parameter count), its ONNX export (Module::ExportOnnx) and its PyTorch names (Param::torch_leaf)
// — and is listed once in module_registry.cc. The model builder (model_builder.cc) knows no kind.
#pragma once

#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "server/engine/config.h"
#include "server/engine/module.h"

namespace qtrain::engine {

class ModuleSite;

// How a kind takes part in finding the linear layers that read flattened feature maps
// (FlattenedInput, model.h).
enum class FlattenUse {
  kBreaks,    // a pending flatten is dropped
  kPasses,    // elementwise modules and containers: a pending flatten stays pending
  kFlattens,  // starts one
  kReads,     // a linear layer: takes the pending flatten
};

struct ModuleKind {
  proto::Module::KindCase kind;
  const char* field;      // the oneof field in model.proto ("linear"), for errors
  const char* type_name;  // Linen type name: unnamed modules are "<type_name>_<index>"
  FlattenUse flatten;
  // Validates `m`'s message, maps site.shape() from the per-example input shape to the output's,
  // counts the parameters and builds the module (null for a parameterised kind in a dry run).
  // InvalidArgument naming the module path and field; ResourceExhausted over the model limits.
  absl::StatusOr<std::unique_ptr<Module>> (*build)(const proto::Module& m, ModuleSite& site);
};

// The kind of `kind`, or null (KIND_NOT_SET, or a kind this build does not know).
const ModuleKind* FindModuleKind(proto::Module::KindCase kind);
// The oneof fields of every kind, "linear, conv2d, ...", for errors.
std::string ModuleKindFields();

// An embedding table built earlier in the model, which a later layer may share (Linear.tied_to).
struct SharedTable {
  Shape shape;             // (rows, features)
  Param* param = nullptr;  // null in a dry run
};

// What a kind's build sees: the module's place in the tree and the model-wide bookkeeping.
// Implemented by the model builder; valid during one build call.
class ModuleSite {
 public:
  // The model-wide part (limits, counters, recursion), implemented by the builder.
  class Tree {
   public:
    virtual ~Tree() = default;
    virtual uint64_t seed() const = 0;
    virtual bool dry_run() const = 0;
    // Adds `n` parameters (n > kMaxParameters means an overflow); ResourceExhausted over the limit.
    virtual absl::Status AddParameters(const std::string& path, int64_t n) = 0;
    virtual void AddActivations(int64_t per_example) = 0;
    // Whether the current value is still token ids (TOKENS input before its embedding).
    virtual bool& tokens() = 0;
    // Embedding tables by module path, registered as they are built (build order).
    virtual void AddTable(const std::string& path, SharedTable table) = 0;
    virtual const SharedTable* FindTable(const std::string& path) const = 0;
    virtual absl::StatusOr<std::unique_ptr<Module>> Build(const proto::Module& m,
                                                          const std::string& parent,
                                                          std::map<std::string, int>& counters,
                                                          Shape& shape, int depth) = 0;
  };

  // `parent` and `parent_counters`: where this module was named (BuildBodyInParentScope).
  ModuleSite(Tree& tree, std::string path, Shape& shape, int depth, std::string parent = "",
             std::map<std::string, int>* parent_counters = nullptr)
      : tree_(tree),
        path_(std::move(path)),
        shape_(shape),
        depth_(depth),
        parent_(std::move(parent)),
        parent_counters_(parent_counters) {}

  const std::string& path() const { return path_; }
  // The per-example shape: the input's when build is called, the output's when it returns.
  Shape& shape() { return shape_; }
  uint64_t seed() const { return tree_.seed(); }
  bool& tokens() { return tree_.tokens(); }
  // This module's table, for layers built after it to share; another module's, or null.
  void AddTable(SharedTable table) { tree_.AddTable(path_, std::move(table)); }
  const SharedTable* FindTable(const std::string& path) const { return tree_.FindTable(path); }

  // A parameterised module is made only outside dry runs (Model::Estimate allocates nothing).
  template <typename Make>
  std::unique_ptr<Module> Allocate(Make make) {
    if (tree_.dry_run()) return nullptr;
    return make();
  }

  // InvalidArgument "module \"<path>\": <what>".
  absl::Status Bad(absl::string_view what) const;
  // `field` = v must be in [1, kMaxDim].
  absl::Status CheckSize(const char* field, int64_t v) const;
  // Counts prod(factors) + extra parameters against the model's limit.
  absl::Status AddParameters(std::initializer_list<int64_t> factors, int64_t extra = 0);
  // Counts activation elements per example beyond the module's output (attention scores).
  void AddActivations(int64_t per_example) { tree_.AddActivations(per_example); }

  // Builds child `m` under this module, Linen-named with `counters`, mapping shape().
  absl::StatusOr<std::unique_ptr<Module>> BuildChild(const proto::Module& m,
                                                     std::map<std::string, int>& counters);
  // Builds the layers of `s` under this module, in order.
  absl::StatusOr<std::vector<std::unique_ptr<Module>>> BuildLayers(const proto::Sequential& s);
  // Builds a container's body: an unnamed Sequential is transparent (its layers live directly
  // under this module), anything else is one child.
  absl::StatusOr<std::unique_ptr<Module>> BuildBody(const proto::Module& body);
  // As BuildBody, but the body's modules are named in this module's parent scope, continuing
  // its Linen counters (Flax's share_scope: a residual add written in the parent's __call__).
  absl::StatusOr<std::unique_ptr<Module>> BuildBodyInParentScope(const proto::Module& body);

 private:
  Tree& tree_;
  std::string path_;
  Shape& shape_;
  int depth_;
  std::string parent_;
  std::map<std::string, int>* parent_counters_;
};

}  // namespace qtrain::engine
