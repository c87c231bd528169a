// The interface between the int8 GEMM driver (kernels/int8_gemm.cc, baseline x86-64) and its
// per-ISA micro-kernels (one translation unit each, compiled with that ISA's flags). Not a public
// API. Everything crossing it is plain pointers, so no inline function compiled for a newer ISA
// can leak into baseline code through the linker.
#pragma once

#include <cstdint>

namespace qtrain::int8gemm::internal {

// Packed layouts, with kp = ceil(K / 2) pairs along K (an odd K is padded with a zero):
//   A block (MR rows):   int16 a_pk[(p * MR + r) * 2 + e]  = A[r][2p + e]   (rows past M are 0)
//   B panel (NR cols):   int16 b_pk[(p * NR + j) * 2 + e]  = B[2p + e][j]   (cols past N are 0)
struct MicroKernel {
  int mr = 0;
  int nr = 0;
  // Packs `rows` (<= MR) rows of A starting at `a` (row stride lda).
  void (*pack_a)(const void* a, int64_t lda, bool a_unsigned, int64_t rows, int64_t k,
                 int16_t* out) = nullptr;
  // Packs `cols` (<= NR) columns of B starting at column 0 of `b`: B(k, j) = b[k*ldb + j], or
  // b[j*ldb + k] when trans_b.
  void (*pack_b)(const int8_t* b, int64_t ldb, bool trans_b, int64_t cols, int64_t k,
                 int16_t* out) = nullptr;
  // out[r * NR + j] = sum_p a_pk · b_pk over kp pairs, int32.
  void (*tile)(const int16_t* a_pk, const int16_t* b_pk, int64_t kp, int32_t* out) = nullptr;
};

const MicroKernel& Avx2MicroKernel();
const MicroKernel& Avx2VnniMicroKernel();
const MicroKernel& Avx512MicroKernel();
const MicroKernel& Avx512VnniMicroKernel();

}  // namespace qtrain::int8gemm::internal
