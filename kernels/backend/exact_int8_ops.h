// Backend ops on qtrain's exact int8 GEMM (kernels/int8_gemm.h): what the oneDNN backend runs
// where oneDNN has no exact int8 kernel (every CPU without VNNI). No oneDNN types.
//
// Errors: InvalidArgument from the descriptor checks of backend.h.
#pragma once

#include "kernels/backend/backend.h"
#include "kernels/int8_gemm.h"

namespace qtrain {

// Backend::MatmulInt8 semantics on `kernel`.
absl::Status ExactInt8Matmul(int8gemm::Kernel kernel, const Int8MatmulDesc& d, const void* a,
                             const int8_t* b, const float* row_scale, const float* col_scale,
                             float* c);

// Backend::ConvFwdInt8 semantics on `kernel`: im2col of the NHWC source (zero padding) times the
// HWIO weights read as a dense (KH·KW·C, O) matrix, int32 out.
absl::Status ExactInt8Conv(int8gemm::Kernel kernel, const ConvDesc& d, const int8_t* src,
                           const int8_t* weights, int32_t* dst);

}  // namespace qtrain
