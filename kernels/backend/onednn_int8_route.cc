#include "kernels/backend/onednn_int8_route.h"

#include <oneapi/dnnl/dnnl.hpp>

#include <cstdio>

#include "absl/base/call_once.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace qtrain {

// QTRAIN_MAX_ISA caps oneDNN too (as ONEDNN_MAX_CPU_ISA would), before its first primitive.
void ApplyIsaCapToOnednn() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    const Isa active = ActiveIsa();
    if (active == DetectedIsa()) return;
    dnnl::cpu_isa cap = dnnl::cpu_isa::all;
    switch (active) {
      case Isa::kBaseline:
        cap = dnnl::cpu_isa::sse41;
        break;
      case Isa::kAvx2:
        cap = dnnl::cpu_isa::avx2;
        break;
      case Isa::kAvx2Vnni:
        cap = dnnl::cpu_isa::avx2_vnni;
        break;
      case Isa::kAvx512:
        cap = dnnl::cpu_isa::avx512_core;
        break;
      case Isa::kAvx512Vnni:
        cap = dnnl::cpu_isa::avx512_core_vnni;
        break;
      case Isa::kAmx:
        break;
    }
    // oneDNN 2.6 answers with a status (it does not throw). On failure (too late: oneDNN already
    // dispatched) its kernels stay uncapped; int8 exactness does not depend on the cap, since
    // candidates are checked by the implementation oneDNN picks, but the level is then not what
    // the tests and GetServerInfo say for oneDNN's float kernels: say so.
    const dnnl::status st = dnnl::set_max_cpu_isa(cap);
    if (st != dnnl::status::success) {
      std::fprintf(stderr, "qtrain: could not cap oneDNN at %s (dnnl status %d)\n", IsaName(active),
                   static_cast<int>(st));
    }
  });
}

bool HasVnni(Isa isa) { return isa == Isa::kAvx2Vnni || isa >= Isa::kAvx512Vnni; }

void ChooseRoute(const std::string& onednn_impl, Int8Route& r) {
  const Isa isa = ActiveIsa();
  bool chosen = false;
  if (onednn_impl.empty()) {
    r.report.candidates.push_back(
        {"onednn", false,
         absl::StrCat("no VNNI at ", IsaName(isa),
                      ": oneDNN's int8 kernels saturate int16 pair sums")});
  } else {
    const bool exact = OnednnInt8ImplIsExact(onednn_impl);
    r.report.candidates.push_back(
        {absl::StrCat("onednn:", onednn_impl), exact,
         exact ? "VNNI/AMX kernel (exact int32 accumulation)" : "not a VNNI/AMX kernel"});
    if (exact) {
      r.kind = Int8Route::Kind::kOnednn;
      r.report.chosen = r.report.candidates.back().name;
      chosen = true;
    }
  }
  for (int8gemm::Kernel k : int8gemm::kFastestFirst) {
    const bool runs = int8gemm::Runs(k, isa);
    r.report.candidates.push_back(
        {int8gemm::KernelName(k), runs,
         runs ? int8gemm::KernelArithmetic(k)
              : absl::StrCat("its instructions are not part of ", IsaName(isa))});
    if (runs && !chosen) {
      r.kind = Int8Route::Kind::kExact;
      r.exact = k;
      r.report.chosen = int8gemm::KernelName(k);
      chosen = true;
    }
  }
  r.report.candidates.push_back({"reference", true, "plain loops"});
  if (!chosen) {
    r.kind = Int8Route::Kind::kReference;
    r.report.chosen = "reference";
  }
}

bool OnednnInt8ImplIsExact(const std::string& impl) {
  return !absl::StartsWith(impl, "ref") &&
         (absl::StrContains(impl, "vnni") || absl::StrContains(impl, "amx"));
}

}  // namespace qtrain
