// The avx512 int8 micro-kernel (see micro_kernel_impl.inc); compiled with the avx512 flags only.
#define QTRAIN_I8_NS avx512
#define QTRAIN_I8_ZMM 1
#define QTRAIN_I8_VNNI 0
#define QTRAIN_I8_MR 8
#define QTRAIN_I8_NV 3
#define QTRAIN_I8_GETTER Avx512MicroKernel
#include "kernels/int8_gemm/micro_kernel_impl.inc"
