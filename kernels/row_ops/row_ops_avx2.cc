// The avx2 row loops (see row_ops_impl.inc); compiled with the avx2 flags only.
#define QTRAIN_ROWOPS_NS avx2
#define QTRAIN_ROWOPS_AVX512 0
#define QTRAIN_ROWOPS_GETTER Avx2Table
#include "kernels/row_ops/row_ops_impl.inc"
