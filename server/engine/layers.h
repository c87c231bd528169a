// Factories of the module kinds that other kinds compose (attention's projections, containers'
// bodies). Each kind is defined in its file under modules/ (module_kind.h).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "server/engine/module.h"

namespace qtrain::engine {

// y = x · kernel (+ bias) over the last axis; kernel (in, out). Op: dot_general0.
std::unique_ptr<Module> MakeLinear(std::string path, int64_t in, int64_t out, bool bias,
                                   uint64_t seed);
// HF Conv1D: the linear module's PyTorch weight is stored (in, out), as its kernel.
void UseConv1dLayout(Module& linear);
// An elementwise activation of `kind`, float.
std::unique_ptr<Module> MakeActivation(std::string path, EltwiseKind kind);
// The EltwiseKind of model.proto's Activation.Kind `kind`; InvalidArgument (naming `path` and the
// valid kinds) for a value this build does not know.
absl::StatusOr<EltwiseKind> ActivationKind(const std::string& path, int kind);
std::unique_ptr<Module> MakeSequential(std::string path,
                                       std::vector<std::unique_ptr<Module>> layers);

}  // namespace qtrain::engine
