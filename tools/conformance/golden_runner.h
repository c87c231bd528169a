// Runs the numerics contract's golden vectors (format "qtrain-golden-v1", see
// ../shared/golden/README.md) against the kernels, comparing as numerics.md §8 says.
// Used by the golden unit test and by the `qtrain-conformance` tool that users point at vectors
// dumped from their own Qwix runs.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/backend/backend.h"

namespace qtrain::conformance {

struct CaseResult {
  std::string name;
  std::string op;
  bool passed = false;
  double max_abs_err = 0;  // over every compared tensor of the case
  double max_rel_err = 0;
  std::string message;  // first failure, or why the case could not run
};

// Parses `path` and runs every case on `backend`. InvalidArgument / NotFound for a missing,
// unreadable or malformed file (bad format tag, missing fields); individual case problems
// (unknown qtype, unknown op) are failed cases, not errors.
absl::StatusOr<std::vector<CaseResult>> RunGoldenFile(const std::string& path, Backend& backend);

// The same over an already-read JSON text.
absl::StatusOr<std::vector<CaseResult>> RunGoldenText(const std::string& text, Backend& backend);

}  // namespace qtrain::conformance
