// The baseline row loops (see row_ops_impl.inc); compiled with the baseline flags only.
#define QTRAIN_ROWOPS_NS baseline
#define QTRAIN_ROWOPS_AVX512 0
#define QTRAIN_ROWOPS_GETTER BaselineTable
#include "kernels/row_ops/row_ops_impl.inc"
