#include "kernels/int8_gemm.h"

#include <omp.h>

#include <algorithm>

#include "kernels/int8_gemm/micro_kernel.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace qtrain::int8gemm {
namespace {

using internal::MicroKernel;

const MicroKernel& Micro(Kernel k) {
  switch (k) {
    case Kernel::kAvx2:
      return internal::Avx2MicroKernel();
    case Kernel::kAvx2Vnni:
      return internal::Avx2VnniMicroKernel();
    case Kernel::kAvx512:
      return internal::Avx512MicroKernel();
    case Kernel::kAvx512Vnni:
      return internal::Avx512VnniMicroKernel();
  }
  return internal::Avx2MicroKernel();
}

// Rows of A one thread keeps hot in L2 while it walks B's panels.
constexpr int64_t kRowsPerChunk = 64;
// Elements of the largest micro-kernel tile (AVX-512: 8 rows x 48 columns).
constexpr int kMaxTile = 8 * 48;
// Below this many multiply-adds one thread is faster than waking the others.
constexpr int64_t kParallelMinMacs = int64_t{1} << 21;

// Writes one MR x NR tile of int32 sums into C (only its rows < M and columns < N).
void StoreTile(const Args& g, const int32_t* tile, int nr, int64_t i0, int64_t rows, int64_t j0,
               int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* t = tile + r * nr;
    const int64_t i = i0 + r;
    if (g.c_s32 != nullptr) {
      int32_t* c = g.c_s32 + i * g.ldc + j0;
      for (int64_t j = 0; j < cols; ++j) c[j] = g.accumulate ? c[j] + t[j] : t[j];
      continue;
    }
    float* c = g.c_f32 + i * g.ldc + j0;
    const float rs = g.row_scale != nullptr ? g.row_scale[i] : 1.0f;
    const float* cs = g.col_scale != nullptr ? g.col_scale + j0 : nullptr;
    // The reference backend's order: float(acc) · row scale · column scale, each rounded.
    for (int64_t j = 0; j < cols; ++j) {
      float v = static_cast<float>(t[j]);
      if (g.row_scale != nullptr) v *= rs;
      if (cs != nullptr) v *= cs[j];
      c[j] = g.accumulate ? c[j] + v : v;
    }
  }
}

}  // namespace

const char* KernelName(Kernel k) {
  switch (k) {
    case Kernel::kAvx2:
      return "exact_avx2";
    case Kernel::kAvx2Vnni:
      return "exact_avx2_vnni";
    case Kernel::kAvx512:
      return "exact_avx512";
    case Kernel::kAvx512Vnni:
      return "exact_avx512_vnni";
  }
  return "?";
}

bool Runs(Kernel k, Isa isa) {
  switch (k) {
    case Kernel::kAvx2:
      return isa >= Isa::kAvx2;
    case Kernel::kAvx2Vnni:
      // The VEX-encoded AVX-VNNI instructions: not implied by AVX-512 VNNI (Cascade Lake and
      // Ice Lake servers have only the EVEX ones), so only the level that requires them.
      return isa == Isa::kAvx2Vnni;
    case Kernel::kAvx512:
      return isa >= Isa::kAvx512;
    case Kernel::kAvx512Vnni:
      return isa >= Isa::kAvx512Vnni;
  }
  return false;
}

const char* KernelArithmetic(Kernel k) {
  return k == Kernel::kAvx2Vnni || k == Kernel::kAvx512Vnni
             ? "exact: u8 x s8 quads (vpdpbusd), int32 sums"
             : "exact: int16 pairs (vpmaddwd), int32 sums";
}

bool BestKernel(Isa isa, Kernel* out) {
  for (Kernel k : kFastestFirst) {
    if (Runs(k, isa)) {
      *out = k;
      return true;
    }
  }
  return false;
}

void MultiplyAdd(Kernel k, const int8_t* x, const int8_t* w, int64_t n, int32_t* acc) {
  Micro(k).multiply_add(x, w, n, acc);
}

void Gemm(Kernel kernel, const Args& g) {
  const MicroKernel& mk = Micro(kernel);
  QTRAIN_CHECK(mk.mr * mk.nr <= kMaxTile);
  const int64_t kg = (g.k + mk.k_group - 1) / mk.k_group;
  const int64_t mblocks = (g.m + mk.mr - 1) / mk.mr;
  const int64_t panels = (g.n + mk.nr - 1) / mk.nr;
  const int64_t a_block = kg * mk.mr * 4, b_panel = kg * mk.nr * 4;  // bytes
  // Scratch from the tensor pool: fresh multi-megabyte buffers would page-fault on every call.
  Tensor a_buf = Tensor::Empty(DType::kU8, {mblocks * a_block});
  Tensor b_buf = Tensor::Empty(DType::kU8, {panels * b_panel});
  uint8_t* a_pk = a_buf.data<uint8_t>();
  uint8_t* b_pk = b_buf.data<uint8_t>();
  // vpdpbusd kernels multiply s8 A as u8 (A + 128): their sums carry 128 · column sum of B.
  const bool shifted = mk.k_group == 4 && !g.a_unsigned;
  Tensor col_buf = Tensor::Empty(DType::kS32, {shifted ? panels * mk.nr : 1});
  int32_t* col_sum = col_buf.data<int32_t>();
  const auto* a_bytes = static_cast<const uint8_t*>(g.a);
  const bool parallel = g.m * g.n * g.k >= kParallelMinMacs && omp_get_max_threads() > 1;

#pragma omp parallel if (parallel)
  {
#pragma omp for schedule(static) nowait
    for (int64_t mb = 0; mb < mblocks; ++mb) {
      const int64_t i0 = mb * mk.mr;
      mk.pack_a(a_bytes + i0 * g.lda, g.lda, g.a_unsigned, std::min<int64_t>(mk.mr, g.m - i0), g.k,
                a_pk + mb * a_block);
    }
#pragma omp for schedule(static)
    for (int64_t pb = 0; pb < panels; ++pb) {
      const int64_t j0 = pb * mk.nr;
      const int8_t* b = g.trans_b ? g.b + j0 * g.ldb : g.b + j0;
      mk.pack_b(b, g.ldb, g.trans_b, std::min<int64_t>(mk.nr, g.n - j0), g.k, b_pk + pb * b_panel,
                shifted ? col_sum + j0 : nullptr);
    }
    // Work items: (chunk of rows, panel). A chunk of packed A stays in L2 across the panels.
    const int64_t blocks_per_chunk = std::max<int64_t>(1, kRowsPerChunk / mk.mr);
    const int64_t chunks = (mblocks + blocks_per_chunk - 1) / blocks_per_chunk;
    alignas(64) int32_t tile[kMaxTile];  // per thread; the largest tile is 8 x 48
#pragma omp for schedule(static) collapse(2)
    for (int64_t ch = 0; ch < chunks; ++ch) {
      for (int64_t pb = 0; pb < panels; ++pb) {
        const int64_t j0 = pb * mk.nr, cols = std::min<int64_t>(mk.nr, g.n - j0);
        const int64_t mb_end = std::min(mblocks, (ch + 1) * blocks_per_chunk);
        for (int64_t mb = ch * blocks_per_chunk; mb < mb_end; ++mb) {
          mk.tile(a_pk + mb * a_block, b_pk + pb * b_panel, kg, tile);
          if (shifted) {
            // Wrapping int32 arithmetic: exact whenever the true sum fits.
            for (int r = 0; r < mk.mr; ++r) {
              for (int j = 0; j < mk.nr; ++j) {
                tile[r * mk.nr + j] =
                    static_cast<int32_t>(static_cast<uint32_t>(tile[r * mk.nr + j]) -
                                         (static_cast<uint32_t>(col_sum[j0 + j]) << 7));
              }
            }
          }
          const int64_t i0 = mb * mk.mr;
          StoreTile(g, tile, mk.nr, i0, std::min<int64_t>(mk.mr, g.m - i0), j0, cols);
        }
      }
    }
  }
}

}  // namespace qtrain::int8gemm
