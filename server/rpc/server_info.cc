#include "server/rpc/server_info.h"

#include <algorithm>
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

#include "kernels/backend/backend_registry.h"
#include "kernels/backend/float_gemm.h"
#include "kernels/backend/int8_kernels.h"
#include "kernels/cpu_isa.h"

#ifndef QTRAIN_VERSION
#define QTRAIN_VERSION "dev"
#endif

namespace qtrain::rpc {
namespace {

// One choice into v1::Int8Kernel or v1::Implementation (the same fields).
template <typename Message>
void FillChoice(const ImplReport& r, Message* out) {
  out->set_op(r.op);
  out->set_chosen(r.chosen);
  for (const ImplCandidate& c : r.candidates) {
    auto* candidate = out->add_candidates();
    candidate->set_name(c.name);
    candidate->set_supported(c.supported);
    candidate->set_reason(c.reason);
  }
}

bool IsFloatMatmul(const v1::Implementation& k) { return absl::StartsWith(k.op(), "matmul f32 "); }

}  // namespace

absl::StatusOr<v1::ServerInfo> MakeServerInfo(int threads_per_session,
                                              const engine::DeviceBudgets* budgets) {
  absl::StatusOr<std::vector<Int8KernelReport>> kernels = DescribeInt8Kernels();
  if (!kernels.ok()) return kernels.status();
  absl::StatusOr<std::vector<ImplReport>> floats = DescribeFloatKernels();
  if (!floats.ok()) return floats.status();
  v1::ServerInfo info;
  info.set_version(QTRAIN_VERSION);
  info.set_cpu(CpuBrand());
  info.set_detected_isa(IsaName(DetectedIsa()));
  info.set_active_isa(IsaName(ActiveIsa()));
  info.set_isa_cap(IsaCapSetting());
  info.set_threads_per_session(threads_per_session);
  info.set_float_gemm(FloatGemmPolicyName(GetFloatGemmPolicy()));
  for (const BackendInfo& b : AvailableBackends()) {
    v1::BackendInfo* out = info.add_backends();
    out->set_name(b.name);
    out->set_device(b.device);
    out->set_description(b.description);
  }
  // Each device with its own budget (host memory first); without budgets, the host unbounded.
  if (budgets == nullptr) {
    v1::DeviceInfo* host = info.add_devices();
    host->set_name(engine::kHostDevice);
    host->set_kind("cpu");
  } else {
    for (const std::unique_ptr<engine::MemoryBudget>& b : budgets->all()) {
      v1::DeviceInfo* d = info.add_devices();
      d->set_name(b->device());
      d->set_kind(b->device().substr(0, b->device().find(':')));
      d->set_memory_budget_bytes(std::max<int64_t>(b->limit(), 0));
    }
  }
  for (const Int8KernelReport& r : *kernels) FillChoice(r, info.add_int8_kernels());
  for (const ImplReport& r : *floats) FillChoice(r, info.add_implementations());
  return CurrentServerInfo(std::move(info), budgets);
}

v1::ServerInfo CurrentServerInfo(v1::ServerInfo info, const engine::DeviceBudgets* budgets) {
  for (v1::DeviceInfo& d : *info.mutable_devices()) {
    const engine::MemoryBudget* b = budgets != nullptr ? budgets->For(d.name()) : nullptr;
    d.set_memory_reserved_bytes(b != nullptr ? b->used() : 0);
  }
  // The float matmuls chosen so far replace those of startup; the other ops stay as they were.
  auto* list = info.mutable_implementations();
  list->erase(std::remove_if(list->begin(), list->end(), IsFloatMatmul), list->end());
  for (const ImplReport& r : FloatGemmChoices()) FillChoice(r, info.add_implementations());
  return info;
}

std::string ServerInfoSummary(const v1::ServerInfo& info) {
  std::string isa = info.active_isa();
  if (info.active_isa() != info.detected_isa()) {
    absl::StrAppend(&isa, " (CPU: ", info.detected_isa(),
                    ", capped by QTRAIN_MAX_ISA=", info.isa_cap(), ")");
  }
  return absl::StrCat(info.cpu(), " | ", isa, " | int8 kernels: ",
                      absl::StrJoin(info.int8_kernels(), ", ",
                                    [](std::string* out, const v1::Int8Kernel& k) {
                                      absl::StrAppend(out, k.op(), " -> ", k.chosen());
                                    }),
                      " | float ops (GEMM policy ", info.float_gemm(), "): ",
                      absl::StrJoin(info.implementations(), ", ",
                                    [](std::string* out, const v1::Implementation& k) {
                                      absl::StrAppend(out, k.op(), " -> ", k.chosen());
                                    }));
}

}  // namespace qtrain::rpc
