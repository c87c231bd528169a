// The avx512 row loops (see row_ops_impl.inc); compiled with the avx512 flags only.
#define QTRAIN_ROWOPS_NS avx512
#define QTRAIN_ROWOPS_AVX512 1
#define QTRAIN_ROWOPS_GETTER Avx512Table
#include "kernels/row_ops/row_ops_impl.inc"
