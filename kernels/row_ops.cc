#include "kernels/row_ops.h"

#include "kernels/cpu_isa.h"
#include "kernels/row_ops/table.h"

namespace qtrain::rowops {
namespace {

// Chosen once, by the active ISA (QTRAIN_MAX_ISA caps it).
const internal::Table& T() {
  static const internal::Table& kTable = ActiveIsa() >= Isa::kAvx512 ? internal::Avx512Table()
                                         : ActiveIsa() >= Isa::kAvx2 ? internal::Avx2Table()
                                                                     : internal::BaselineTable();
  return kTable;
}

}  // namespace

float AbsMax(const float* x, int64_t n) { return T().abs_max(x, n); }
void MinMax0(const float* x, int64_t n, float* lo, float* hi) { T().min_max0(x, n, lo, hi); }
double SumSquares(const float* x, int64_t n) { return T().sum_squares(x, n); }
void AbsMaxInto(const float* x, int64_t n, float* acc) { T().abs_max_into(x, n, acc); }
void MinMaxInto(const float* x, int64_t n, float* lo, float* hi) { T().min_max_into(x, n, lo, hi); }
void SumSquaresInto(const float* x, int64_t n, double* acc) { T().sum_squares_into(x, n, acc); }
void QuantizeRowS8(const QuantRowArgs& args, int8_t* out) { T().quantize_row_s8(args, out); }
void QuantizeRowU8(const QuantRowArgs& args, uint8_t* out) { T().quantize_row_u8(args, out); }
void QuantizeRowF32(const QuantRowArgs& args, float* out) { T().quantize_row_f32(args, out); }
void DequantizeRowS8(const int8_t* q, int64_t n, const float* scale, int64_t scale_stride,
                     const float* zero_point, float* out) {
  T().dequantize_row_s8(q, n, scale, scale_stride, zero_point, out);
}
UpdateMax AdamWUpdate(const AdamWArgs& args) { return T().adamw_update(args); }
UpdateMax SgdUpdate(const SgdArgs& args) { return T().sgd_update(args); }
bool AdamWUpdateIsFinite(const AdamWArgs& args) { return T().adamw_update_is_finite(args); }
bool SgdUpdateIsFinite(const SgdArgs& args) { return T().sgd_update_is_finite(args); }
void MseErrors(const float* x, int64_t n, const float* scales, int64_t m, float qmin, float qmax,
               double* err) {
  T().mse_errors(x, n, scales, m, qmin, qmax, err);
}

}  // namespace qtrain::rowops
