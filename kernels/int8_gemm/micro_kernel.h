// The interface between the int8 GEMM driver (kernels/int8_gemm.cc, baseline x86-64) and its
// per-ISA micro-kernels (one translation unit each, compiled with that ISA's flags). Not a public
// API. Everything crossing it is plain pointers, so no inline function compiled for a newer ISA
// can leak into baseline code through the linker.
#pragma once

#include <cstdint>

namespace qtrain::int8gemm::internal {

// K is split into groups of `k_group` (2 or 4) values; kg = ceil(K / k_group), the tail padded
// with zeros. Every (group, row) of A and (group, column) of B is 4 bytes:
//   k_group 2 (vpmaddwd):  int16 pairs,            a_pk[(g*MR + r)*2 + e] = A[r][2g + e]
//                                                  b_pk[(g*NR + j)*2 + e] = B[2g + e][j]
//   k_group 4 (vpdpbusd):  u8 / s8 quads,          a_pk[(g*MR + r)*4 + e] = A[r][4g + e] (+128
//                          when A is s8: vpdpbusd multiplies u8 by s8),
//                                                  b_pk[(g*NR + j)*4 + e] = B[4g + e][j]
// Rows past M and columns past N are zero.
struct MicroKernel {
  int mr = 0;
  int nr = 0;
  int k_group = 2;
  // Packs `rows` (<= MR) rows of A starting at `a` (row stride lda).
  void (*pack_a)(const void* a, int64_t lda, bool a_unsigned, int64_t rows, int64_t k,
                 uint8_t* out) = nullptr;
  // Packs `cols` (<= NR) columns of B starting at column 0 of `b`: B(k, j) = b[k*ldb + j], or
  // b[j*ldb + k] when trans_b. k_group 4 also writes col_sum[j] = sum_k B(k, j) (the
  // compensation of the +128 shift of an s8 A: the driver subtracts 128 · col_sum[j]).
  void (*pack_b)(const int8_t* b, int64_t ldb, bool trans_b, int64_t cols, int64_t k, uint8_t* out,
                 int32_t* col_sum) = nullptr;
  // out[r * NR + j] = sum over the kg groups of a_pk · b_pk, int32 (wrapping).
  void (*tile)(const uint8_t* a_pk, const uint8_t* b_pk, int64_t kg, int32_t* out) = nullptr;
  // acc[i] += int32(x[i]) · int32(w[i]) for i < n: one tap of a depthwise convolution over the
  // channels of a pixel (exact: every product fits int16, sums are int32).
  void (*multiply_add)(const int8_t* x, const int8_t* w, int64_t n, int32_t* acc) = nullptr;
};

const MicroKernel& Avx2MicroKernel();
const MicroKernel& Avx2VnniMicroKernel();
const MicroKernel& Avx512MicroKernel();
const MicroKernel& Avx512VnniMicroKernel();

}  // namespace qtrain::int8gemm::internal
