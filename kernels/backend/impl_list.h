// The record of an implementation choice: for one op and shape, every candidate in the order
// tried, whether it supports the op here and why (dtype, shape, ISA, build), and the one chosen.
// Backends fill it when they choose (once per shape, cached); GetServerInfo, `qtrain info
// --verbose` and /metrics report it.
#pragma once

#include <string>
#include <vector>

namespace qtrain {

struct ImplCandidate {
  std::string name;  // "onednn:brg:avx512_core_vnni", "openblas:Haswell", "reference"
  bool supported = false;
  std::string reason;  // why it can or cannot run the op, or how it compared
};

struct ImplReport {
  std::string op;      // "matmul f32 256x1024x1024", "matmul s8xs8 256x1024x1024", ...
  std::string chosen;  // the candidate that runs it
  std::vector<ImplCandidate> candidates;
};

}  // namespace qtrain
