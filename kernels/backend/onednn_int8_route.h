// The int8 candidate list of int8_kernels.h as the oneDNN backend applies it, and the
// QTRAIN_MAX_ISA cap on oneDNN. Internal to kernels/backend/onednn_*.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/backend/int8_kernels.h"
#include "kernels/cpu_isa.h"
#include "kernels/int8_gemm.h"

namespace qtrain {

// Caps oneDNN at the active ISA (as ONEDNN_MAX_CPU_ISA would) once, before its first primitive.
void ApplyIsaCapToOnednn();

// True when the ISA level has VNNI instructions (AVX-VNNI or AVX-512 VNNI).
bool HasVnni(Isa isa);

// How one int8 op of one shape runs, decided on first use and cached by the backend.
struct Int8Route {
  enum class Kind : uint8_t { kOnednn, kExact, kReference };
  Kind kind = Kind::kReference;
  int8gemm::Kernel exact = int8gemm::Kernel::kAvx2;
  Int8KernelReport report;
};

// Candidate 1: oneDNN, when `impl` (what oneDNN picked; "" when VNNI is absent and it was not
// asked) is an exact VNNI/AMX kernel.
void OnednnInt8Candidate(const std::string& impl, Int8Route& r);
// Candidates 2 and 3: qtrain's exact kernels, then the reference loops.
void FinishRoute(Int8Route& r);

}  // namespace qtrain
