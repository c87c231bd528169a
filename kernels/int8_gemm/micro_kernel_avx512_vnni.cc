// The avx512_vnni int8 micro-kernel (see micro_kernel_impl.inc); compiled with the avx512_vnni
// flags only.
#define QTRAIN_I8_NS avx512_vnni
#define QTRAIN_I8_ZMM 1
#define QTRAIN_I8_VNNI 1
#define QTRAIN_I8_MR 8
#define QTRAIN_I8_NV 3
#define QTRAIN_I8_GETTER Avx512VnniMicroKernel
#include "kernels/int8_gemm/micro_kernel_impl.inc"
