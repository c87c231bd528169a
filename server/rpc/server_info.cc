#include "server/rpc/server_info.h"

#include <algorithm>
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

absl::StatusOr<v1::ServerInfo> MakeServerInfo(int threads_per_session,
                                              const engine::MemoryBudget* budget) {
  absl::StatusOr<std::vector<Int8KernelReport>> kernels = DescribeInt8Kernels();
  if (!kernels.ok()) return kernels.status();
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
  // Every backend today keeps its tensors in host memory: one device, the server's budget.
  v1::DeviceInfo* host = info.add_devices();
  host->set_name("cpu:0");
  host->set_kind("cpu");
  host->set_memory_budget_bytes(budget != nullptr ? std::max<int64_t>(budget->limit(), 0) : 0);
  absl::Status floats = DescribeFloatKernels().status();
  if (!floats.ok()) return floats;
  for (const Int8KernelReport& r : *kernels) {
    v1::Int8Kernel* k = info.add_int8_kernels();
    k->set_op(r.op);
    k->set_chosen(r.chosen);
    for (const Int8Candidate& c : r.candidates) {
      v1::Int8KernelCandidate* out = k->add_candidates();
      out->set_name(c.name);
      out->set_supported(c.supported);
      out->set_reason(c.reason);
    }
  }
  return CurrentServerInfo(std::move(info), budget);
}

v1::ServerInfo CurrentServerInfo(v1::ServerInfo info, const engine::MemoryBudget* budget) {
  for (v1::DeviceInfo& d : *info.mutable_devices()) {
    if (d.kind() == "cpu") d.set_memory_reserved_bytes(budget != nullptr ? budget->used() : 0);
  }
  info.clear_implementations();
  for (const ImplReport& r : FloatGemmChoices()) {
    v1::Implementation* k = info.add_implementations();
    k->set_op(r.op);
    k->set_chosen(r.chosen);
    for (const ImplCandidate& c : r.candidates) {
      v1::ImplementationCandidate* out = k->add_candidates();
      out->set_name(c.name);
      out->set_supported(c.supported);
      out->set_reason(c.reason);
    }
  }
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
                      " | float GEMM ", info.float_gemm(), ": ",
                      absl::StrJoin(info.implementations(), ", ",
                                    [](std::string* out, const v1::Implementation& k) {
                                      absl::StrAppend(out, k.op(), " -> ", k.chosen());
                                    }));
}

}  // namespace qtrain::rpc
