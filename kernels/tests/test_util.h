// Helpers for kernel tests: seeded random tensors and error measures.
#pragma once

#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

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

// Host tensors mirrored on a backend's device for the descriptor-level ops of one test step, so
// that a row runs unchanged on a device backend (and on the guarded one): P(t) is t's address on
// the device — t's own on a host backend, else a copy made on first use —, Back() copies every
// mirrored tensor's device values into its host tensor. Failed copies are test failures.
class Mirror {
 public:
  explicit Mirror(Backend& backend) : backend_(backend) {}
  template <typename T = float>
  T* P(Tensor& t) {
    return static_cast<T*>(Device(t));
  }
  template <typename T = float>
  const T* P(const Tensor& t) {
    return static_cast<const T*>(Device(const_cast<Tensor&>(t)));
  }
  void Back();

 private:
  void* Device(Tensor& host);

  Backend& backend_;
  std::vector<std::pair<Tensor*, Tensor>> copies_;  // host tensor, its device copy
};

// t on the backend's device (shared on a host backend), and a device tensor back as a new host
// tensor; failed copies are test failures (and give an empty tensor).
Tensor Upload(Backend& backend, const Tensor& t);
Tensor Download(Backend& backend, const Tensor& t);

// f(m) with a fresh Mirror m of `backend`, then m.Back(): one descriptor-level op on device copies.
template <typename F>
auto OnDevice(Backend& backend, F f) -> decltype(f(std::declval<Mirror&>())) {
  Mirror m(backend);
  auto result = f(m);
  m.Back();
  return result;
}

// The backends every conformance row runs against the reference: oneDNN, and the guarded test
// backend (whose memory the host cannot touch outside its ops). A GPU backend adds itself here.
std::vector<std::unique_ptr<Backend>> ConformanceBackends();

// The int8 kernel the oneDNN backend must pick at the active ISA (QTRAIN_MAX_ISA): oneDNN's VNNI
// brgemm with VNNI, qtrain's exact kernels below it. Tests assert it so that a per-ISA run that
// silently took another path fails.
std::string ExpectedInt8Kernel();

}  // namespace qtrain::testing
