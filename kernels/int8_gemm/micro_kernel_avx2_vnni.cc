// The avx2_vnni int8 micro-kernel (see micro_kernel_impl.inc); compiled with the avx2_vnni flags
// only.
#define QTRAIN_I8_NS avx2_vnni
#define QTRAIN_I8_ZMM 0
#define QTRAIN_I8_VNNI 1
#define QTRAIN_I8_MR 4
#define QTRAIN_I8_NV 3
#define QTRAIN_I8_GETTER Avx2VnniMicroKernel
#include "kernels/int8_gemm/micro_kernel_impl.inc"
