// The CPU's instruction sets, and the cap that testers and operators put on them.
//
// qtrain's own kernels and oneDNN dispatch on the *active* ISA: the CPU's features, limited by
// QTRAIN_MAX_ISA (`avx2`, `avx2_vnni`, `avx512`, `avx512_vnni`, `amx`). The cap lets a newer
// machine run every older code path (tests run once per level); it also caps oneDNN (the
// equivalent of ONEDNN_MAX_CPU_ISA) the first time a oneDNN backend is made.
//
// Levels are feature sets, not a strict chain: `avx512` is AVX-512 without any VNNI (Skylake-X),
// `avx2_vnni` is AVX2 with 256-bit AVX-VNNI and no AVX-512 (Alder Lake). A cap above what the CPU
// has gives the CPU's own level.
//
// Thread-safe: the CPU and the environment are read once, on first use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qtrain {

enum class Isa : uint8_t {
  kBaseline,    // x86-64 below v3 (no AVX2 or FMA): int8 on the reference loops, slow but exact
  kAvx2,        // x86-64-v3: AVX2 + FMA (Haswell .. Zen 3)
  kAvx2Vnni,    // AVX2 + AVX-VNNI (256-bit vpdpbusd / vpdpwssd)
  kAvx512,      // x86-64-v4: AVX-512 F/BW/CD/DQ/VL, no VNNI
  kAvx512Vnni,  // AVX-512 with VNNI (Cascade Lake, Ice Lake, Zen 4/5)
  kAmx,         // AVX-512 VNNI + AMX-INT8 tiles (Sapphire Rapids)
};

// Lower-case level name as QTRAIN_MAX_ISA spells it ("baseline", "avx2", "avx512_vnni", ...).
const char* IsaName(Isa isa);

// Parses a QTRAIN_MAX_ISA value (case-insensitive). InvalidArgument listing the valid names.
absl::StatusOr<Isa> ParseIsa(absl::string_view name);

// What this CPU supports (CPUID and the OS's register-state support), no cap.
Isa DetectedIsa();

// The CPU's level limited by QTRAIN_MAX_ISA. A malformed QTRAIN_MAX_ISA is ignored here (with one
// line on stderr); servers call ValidateIsaEnvironment() at startup and refuse to start instead.
Isa ActiveIsa();

// QTRAIN_MAX_ISA as the process sees it ("" when unset).
std::string IsaCapSetting();

// InvalidArgument when QTRAIN_MAX_ISA is set to an unknown name.
absl::Status ValidateIsaEnvironment();

// The levels this CPU can run (baseline excluded), lowest first: the per-ISA test runs.
std::vector<Isa> RunnableIsas();

// One human line: "AMD EPYC 9B45 | avx512_vnni (capped by QTRAIN_MAX_ISA=avx2 to avx2)".
std::string CpuSummary();

// The CPU's brand string from CPUID ("" when the CPU has none).
std::string CpuBrand();

}  // namespace qtrain
