// The per-ISA implementations of kernels/row_ops.h, as a table of plain function pointers (so
// no inline function compiled for a newer ISA can reach baseline code through the linker). Not a
// public API: row_ops.cc picks a table by the active ISA.
#pragma once

#include "kernels/row_ops.h"

namespace qtrain::rowops::internal {

struct Table {
  float (*abs_max)(const float*, int64_t);
  void (*min_max0)(const float*, int64_t, float*, float*);
  double (*sum_squares)(const float*, int64_t);
  void (*abs_max_into)(const float*, int64_t, float*);
  void (*min_max_into)(const float*, int64_t, float*, float*);
  void (*sum_squares_into)(const float*, int64_t, double*);
  void (*quantize_row_s8)(const QuantRowArgs&, int8_t*);
  void (*quantize_row_u8)(const QuantRowArgs&, uint8_t*);
  void (*quantize_row_f32)(const QuantRowArgs&, float*);
  void (*dequantize_row_s8)(const int8_t*, int64_t, const float*, int64_t, const float*, float*);
  UpdateMax (*adamw_update)(const AdamWArgs&);
  UpdateMax (*sgd_update)(const SgdArgs&);
  bool (*adamw_update_is_finite)(const AdamWArgs&);
  bool (*sgd_update_is_finite)(const SgdArgs&);
  void (*mse_errors)(const float*, int64_t, const float*, int64_t, float, float, double*);
};

const Table& BaselineTable();
const Table& Avx2Table();
const Table& Avx512Table();

}  // namespace qtrain::rowops::internal
