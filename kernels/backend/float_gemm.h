// The f32 matmul candidate list of the CPU backend:
//
//   1. oneDNN's f32 matmul (gemm:jit / brgemm) — every shape, every ISA.
//   2. OpenBLAS (Debian's libopenblas, OpenMP build, sharing oneDNN's OpenMP threads) — when its
//      kernels (openblas_get_corename) are within the active ISA (QTRAIN_MAX_ISA) and the dims fit
//      its 32-bit integers. On some AVX2 CPUs it is well ahead of oneDNN 2.6's AVX2 GEMM.
//
// Chosen once per shape (dims, leading dims, transposes, threads) and cached process-wide: under
// the `auto` policy by timing both on the first call's operands, keeping OpenBLAS only when it is
// at least 10 % faster — near-ties stay with the first candidate, so that runs repeat their bits.
// `onednn` / `openblas` pin one (server flag --float_gemm, env QTRAIN_FLOAT_GEMM). Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/backend/backend.h"
#include "kernels/backend/impl_list.h"

namespace qtrain {

enum class FloatGemmPolicy : uint8_t { kAuto, kOnednn, kOpenblas };

// "auto", "onednn" or "openblas"; InvalidArgument naming the value otherwise.
absl::StatusOr<FloatGemmPolicy> ParseFloatGemmPolicy(absl::string_view name);
const char* FloatGemmPolicyName(FloatGemmPolicy p);
// Process-wide; forgets the choices made so far. The default is QTRAIN_FLOAT_GEMM's, else auto.
void SetFloatGemmPolicy(FloatGemmPolicy p);
FloatGemmPolicy GetFloatGemmPolicy();

// "" when OpenBLAS can run `d` here, else why not (ISA, build, dims).
std::string OpenblasUnsupported(const MatmulDesc& d);
// C [+]= op(A)·op(B) through cblas_sgemm; `d` must be valid and supported.
void OpenblasMatmul(const MatmulDesc& d, const float* a, const float* b, float* c);

enum class FloatGemmImpl : uint8_t { kOnednn, kOpenblas };

// The choice for `d`'s shape (see above). `onednn_name` names oneDNN's kernel for the report;
// `run_onednn(c)` runs oneDNN's matmul of the call's operands into `c` (a scratch buffer while
// timing: the caller's output is not touched). Errors: run_onednn's.
absl::StatusOr<FloatGemmImpl> ChooseFloatGemm(
    const MatmulDesc& d, const float* a, const float* b, const std::string& onednn_name,
    const std::function<absl::Status(float*)>& run_onednn);

// The choices made so far in this process, ordered by op name.
std::vector<ImplReport> FloatGemmChoices();

// Chooses for the float matmuls of a representative layer (256x1024x1024: forward, dx and dw),
// then returns FloatGemmChoices() followed by what runs the other representative float ops
// (convolution, activations, norms, softmax, pooling, rotary). Internal when oneDNN cannot make
// a CPU engine or primitive.
absl::StatusOr<std::vector<ImplReport>> DescribeFloatKernels();

}  // namespace qtrain
