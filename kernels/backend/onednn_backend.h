// oneDNN CPU backend internals shared with its tests: which implementation oneDNN picked for a
// cached primitive (to assert that int8 matmuls stay on the VNNI brgemm kernel).
#pragma once

#include <string>

#include "kernels/backend/backend.h"

namespace qtrain {

// The oneDNN implementation name (impl_info_str) oneDNN selects for an int8 matmul of these
// dims with scale post-ops, e.g. "brg:avx512_core_vnni". Internal on oneDNN errors.
absl::StatusOr<std::string> OnednnInt8MatmulImpl(const Int8MatmulDesc& d, bool row_scale,
                                                 bool col_scale);

}  // namespace qtrain
