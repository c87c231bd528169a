// The avx2 int8 micro-kernel (see micro_kernel_impl.inc); compiled with the avx2 flags only.
#define QTRAIN_I8_NS avx2
#define QTRAIN_I8_ZMM 0
#define QTRAIN_I8_VNNI 0
#define QTRAIN_I8_MR 4
#define QTRAIN_I8_NV 3
#define QTRAIN_I8_GETTER Avx2MicroKernel
#include "kernels/int8_gemm/micro_kernel_impl.inc"
