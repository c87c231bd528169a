// The module kinds this build knows. Each is defined in its own file under modules/; they are
// listed here rather than registered by static initialisers because the engine is a static
// library, whose linker drops object files nothing references.
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/engine/module_kind.h"
#include "server/engine/onnx_graph.h"

namespace qtrain::engine {

extern const ModuleKind kLinearKind, kConv2DKind, kEmbeddingKind, kLayerNormKind, kRmsNormKind,
    kActivationKind, kAttentionKind, kPoolKind, kFlattenKind, kDropoutKind, kSequentialKind,
    kResidualKind, kBatchNormKind, kToTokensKind, kClassTokenKind, kPositionEmbeddingKind,
    kTakeTokenKind, kGatedMlpKind;

namespace {

const ModuleKind* const kKinds[] = {
    &kLinearKind,    &kConv2DKind,     &kEmbeddingKind,  &kLayerNormKind,
    &kRmsNormKind,   &kActivationKind, &kAttentionKind,  &kPoolKind,
    &kFlattenKind,   &kDropoutKind,    &kSequentialKind, &kResidualKind,
    &kBatchNormKind, &kToTokensKind,   &kClassTokenKind, &kPositionEmbeddingKind,
    &kTakeTokenKind, &kGatedMlpKind,
};

}  // namespace

const ModuleKind* FindModuleKind(proto::Module::KindCase kind) {
  for (const ModuleKind* k : kKinds) {
    if (k->kind == kind) return k;
  }
  return nullptr;
}

std::string ModuleKindFields() {
  return absl::StrJoin(std::begin(kKinds), std::end(kKinds), ", ",
                       [](std::string* out, const ModuleKind* k) { out->append(k->field); });
}

absl::StatusOr<std::string> Module::ExportOnnx(OnnxGraph&, const std::string&) {
  return absl::UnimplementedError(
      absl::StrCat("module \"", path(), "\" has no ONNX form in this version of qtrain"));
}

}  // namespace qtrain::engine
