// qtrain's own exact int8 GEMM: the integer path on CPUs where oneDNN has no exact int8 kernel.
//
// Without VNNI, oneDNN multiplies u8×s8 pairs with vpmaddubsw, whose int16 pair sums saturate for
// full-range int8 (its docs ask for 7-bit data), so Qwix's [-128, 127] operands would come out
// wrong. Without VNNI these kernels widen both operands to int16 and multiply pairs with
// vpmaddwd: every product and pair sum fits. With VNNI they use vpdpbusd, which adds four u8×s8
// products into int32 without saturating (an s8 A shifted by +128, the shift compensated by
// column sums of B). Either way the int32 sums equal the reference backend's (wrapping alike once
// K·255·128 ≥ 2^31).
//
// Operands are packed per call (A in MR-row blocks, B in NR-column panels); tiles run in parallel
// on OpenMP threads. Stateless and reentrant: scratch is per call.
#pragma once

#include <cstdint>

#include "kernels/cpu_isa.h"

namespace qtrain::int8gemm {

enum class Kernel : uint8_t {
  kAvx2,        // vpmaddwd + vpaddd on ymm
  kAvx2Vnni,    // vpdpbusd on ymm (AVX-VNNI)
  kAvx512,      // vpmaddwd + vpaddd on zmm (AVX-512BW)
  kAvx512Vnni,  // vpdpbusd on zmm (AVX-512 VNNI)
};

// Every kernel, fastest first: the order in which the backend tries them.
inline constexpr Kernel kFastestFirst[] = {Kernel::kAvx512Vnni, Kernel::kAvx512, Kernel::kAvx2Vnni,
                                           Kernel::kAvx2};

// "exact_avx2", "exact_avx2_vnni", "exact_avx512", "exact_avx512_vnni".
const char* KernelName(Kernel k);
// How it multiplies, for reports: "exact: int16 pairs (vpmaddwd), int32 sums", ...
const char* KernelArithmetic(Kernel k);

// The fastest kernel the ISA level runs; false when it runs none (below AVX2).
bool BestKernel(Isa isa, Kernel* out);

// True when `isa` has the instructions `k` uses.
bool Runs(Kernel k, Isa isa);

// C(M,N) [+]= A(M,K) · B(K,N) accumulated in int32, then (float output) scaled as
// float(acc) · row_scale[i] · col_scale[j] in that order (scales may be null = 1).
// A: s8 or (a_unsigned) u8, row-major with lda. B: s8, (K,N) with ldb, or (N,K) when trans_b.
// Exactly one of c_f32 / c_s32 is set. Dims must be positive and leading dims valid (the caller
// validates: backend.h's ValidateMatmulDesc).
struct Args {
  int64_t m = 0, n = 0, k = 0;
  const void* a = nullptr;
  int64_t lda = 0;
  bool a_unsigned = false;
  const int8_t* b = nullptr;
  int64_t ldb = 0;
  bool trans_b = false;
  const float* row_scale = nullptr;
  const float* col_scale = nullptr;
  float* c_f32 = nullptr;
  int32_t* c_s32 = nullptr;
  int64_t ldc = 0;
  bool accumulate = false;
};

// Runs `k`; the caller has checked Runs(k, ActiveIsa()).
void Gemm(Kernel k, const Args& args);

// acc[i] += x[i] · w[i] in int32 for i < n, on `k`'s instructions: the inner step of a depthwise
// convolution, where no GEMM applies. Same preconditions as Gemm.
void MultiplyAdd(Kernel k, const int8_t* x, const int8_t* w, int64_t n, int32_t* acc);

}  // namespace qtrain::int8gemm
