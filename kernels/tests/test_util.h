// Helpers for kernel tests: seeded random tensors and error measures.
#pragma once

#include <memory>
#include <random>
#include <string>

#include "kernels/backend/backend.h"
#include "kernels/tensor.h"

namespace qtrain::testing {

// Normal(0, stddev) values, deterministic for a seed.
Tensor RandomTensor(const Shape& shape, uint32_t seed, float stddev = 1.0f);

// max |a - b| / max(max |b|, tiny): error relative to the reference's magnitude.
double MaxRelativeToPeak(const Tensor& a, const Tensor& b);
// mean |a - b| / mean |b|.
double MeanRelativeDifference(const Tensor& a, const Tensor& b);

std::unique_ptr<Backend> Onednn();

// The int8 kernel the oneDNN backend must pick at the active ISA (QTRAIN_MAX_ISA): oneDNN's VNNI
// brgemm with VNNI, qtrain's exact kernels below it. Tests assert it so that a per-ISA run that
// silently took another path fails.
std::string ExpectedInt8Kernel();

}  // namespace qtrain::testing
