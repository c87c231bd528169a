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

// Walks the candidate list into `r` (its report.op already set): oneDNN when `onednn_impl` (what
// oneDNN picked; "" when the ISA has no VNNI and it was not asked) is an exact VNNI/AMX kernel,
// else qtrain's fastest exact kernel the active ISA runs, else the reference loops.
void ChooseRoute(const std::string& onednn_impl, Int8Route& r);

}  // namespace qtrain
