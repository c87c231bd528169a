#include "kernels/status_macros.h"

#include <cstdio>
#include <cstdlib>

namespace qtrain::internal {

void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "%s:%d: check failed: %s\n", file, line, cond);
  std::abort();
}

}  // namespace qtrain::internal
