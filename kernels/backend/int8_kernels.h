// Which implementation runs each int8 op: an ordered candidate list, the first that supports the
// op wins, chosen once per shape and cached by the backend.
//
//   1. oneDNN — only when the active ISA has VNNI (or AMX) and oneDNN picks a VNNI/AMX kernel
//      for the descriptor (impl_info_str names it). Its non-VNNI int8 kernels multiply u8×s8
//      pairs with vpmaddubsw, whose int16 pair sums saturate on full-range int8: never used.
//   2. qtrain's exact int8 GEMM (kernels/int8_gemm.h), the best variant the active ISA runs:
//      exact_avx512_vnni, exact_avx512, exact_avx2_vnni, exact_avx2. Convolutions go through
//      im2col (per group when grouped); depthwise ones multiply channel rows directly.
//   3. reference — plain loops, for CPUs below AVX2 (x86-64-v3): exact and slow.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"
#include "kernels/backend/impl_list.h"

namespace qtrain {

// One candidate as considered for one int8 op, and the selection for one op and shape.
using Int8Candidate = ImplCandidate;
using Int8KernelReport = ImplReport;

// The int8 kernels a oneDNN backend picks on this machine (under QTRAIN_MAX_ISA) for the shapes
// training issues: matmul with s8 and u8 sources, with a transposed weight (QT's dx), a 3x3
// convolution and a 3x3 depthwise one. Internal when oneDNN cannot make a CPU engine or a
// primitive.
absl::StatusOr<std::vector<Int8KernelReport>> DescribeInt8Kernels();

// The kernel a oneDNN backend runs for one int8 matmul / convolution (the chosen name above).
absl::StatusOr<std::string> Int8MatmulKernel(const Int8MatmulDesc& d, bool row_scale,
                                             bool col_scale);
absl::StatusOr<std::string> Int8ConvKernel(const ConvDesc& d);

// True when a oneDNN implementation name is one whose int8 arithmetic is exact on full-range
// operands: a VNNI or AMX kernel other than the slow reference one.
bool OnednnInt8ImplIsExact(const std::string& impl);

}  // namespace qtrain
