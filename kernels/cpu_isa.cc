#include "kernels/cpu_isa.h"

#include <cpuid.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace qtrain {
namespace {

constexpr Isa kAllIsas[] = {Isa::kBaseline, Isa::kAvx2,       Isa::kAvx2Vnni,
                            Isa::kAvx512,   Isa::kAvx512Vnni, Isa::kAmx};

struct Features {
  bool avx2 = false;  // AVX2 + FMA + F16C + BMI1/2 with YMM state enabled by the OS
  bool avx_vnni = false;
  bool avx512 = false;  // F, BW, CD, DQ, VL with ZMM state enabled
  bool avx512_vnni = false;
  bool amx = false;  // AMX-TILE + AMX-INT8 with tile state enabled
};

uint64_t Xgetbv() {
  uint32_t lo = 0, hi = 0;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

Features ReadCpu() {
  Features f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c & bit_OSXSAVE) != 0;
  const bool fma = (c & bit_FMA) != 0, f16c = (c & bit_F16C) != 0, avx = (c & bit_AVX) != 0;
  if (!osxsave || !avx) return f;
  const uint64_t xcr0 = Xgetbv();
  const bool ymm_os = (xcr0 & 0x6) == 0x6;           // SSE + AVX state
  const bool zmm_os = (xcr0 & 0xE6) == 0xE6;         // + opmask, ZMM_Hi256, Hi16_ZMM
  const bool tile_os = (xcr0 & 0x60000) == 0x60000;  // XTILECFG + XTILEDATA
  if (__get_cpuid_max(0, nullptr) < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned max_subleaf = a, b7 = b, c7 = c, d7 = d;
  unsigned a71 = 0;
  if (max_subleaf >= 1) {
    __cpuid_count(7, 1, a, b, c, d);
    a71 = a;
  }
  f.avx2 = ymm_os && fma && f16c && (b7 & bit_AVX2) && (b7 & bit_BMI) && (b7 & bit_BMI2);
  f.avx_vnni = f.avx2 && (a71 & (1u << 4));
  f.avx512 = f.avx2 && zmm_os && (b7 & bit_AVX512F) && (b7 & bit_AVX512BW) && (b7 & bit_AVX512CD) &&
             (b7 & bit_AVX512DQ) && (b7 & bit_AVX512VL);
  f.avx512_vnni = f.avx512 && (c7 & (1u << 11));
  f.amx = f.avx512_vnni && tile_os && (d7 & (1u << 24)) && (d7 & (1u << 25));
  return f;
}

// The features a level needs.
Features Needs(Isa isa) {
  Features f;
  f.avx2 = isa != Isa::kBaseline;
  f.avx_vnni = isa == Isa::kAvx2Vnni;
  f.avx512 = isa >= Isa::kAvx512;
  f.avx512_vnni = isa >= Isa::kAvx512Vnni;
  f.amx = isa == Isa::kAmx;
  return f;
}

bool Has(const Features& have, const Features& need) {
  return (have.avx2 || !need.avx2) && (have.avx_vnni || !need.avx_vnni) &&
         (have.avx512 || !need.avx512) && (have.avx512_vnni || !need.avx512_vnni) &&
         (have.amx || !need.amx);
}

// The highest level whose features the CPU has, and which the cap allows. Levels are feature
// sets: avx512 does not include AVX-VNNI, so a cap of avx512 on a Zen 4 gives avx512, not the
// higher-numbered-but-disjoint avx2_vnni.
Isa HighestRunnable(const Features& have, Isa cap) {
  Isa best = Isa::kBaseline;
  for (Isa isa : kAllIsas) {
    if (isa <= cap && Has(have, Needs(isa))) best = isa;
  }
  return best;
}

const Features& Cpu() {
  static const Features kCpu = ReadCpu();
  return kCpu;
}

}  // namespace

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kBaseline:
      return "baseline";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx2Vnni:
      return "avx2_vnni";
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx512Vnni:
      return "avx512_vnni";
    case Isa::kAmx:
      return "amx";
  }
  return "?";
}

absl::StatusOr<Isa> ParseIsa(absl::string_view name) {
  const std::string lower = absl::AsciiStrToLower(name);
  for (Isa isa : kAllIsas) {
    if (lower == IsaName(isa)) return isa;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("QTRAIN_MAX_ISA=\"", name,
                   "\" is not an ISA level; use baseline, avx2, avx2_vnni, avx512, avx512_vnni "
                   "or amx"));
}

Isa DetectedIsa() { return HighestRunnable(Cpu(), Isa::kAmx); }

std::string IsaCapSetting() {
  const char* env = std::getenv("QTRAIN_MAX_ISA");
  return env != nullptr ? env : "";
}

Isa ActiveIsa() {
  static const Isa kActive = [] {
    const std::string setting = IsaCapSetting();
    if (setting.empty()) return DetectedIsa();
    absl::StatusOr<Isa> cap = ParseIsa(setting);
    if (!cap.ok()) {
      std::fprintf(stderr, "qtrain: ignoring QTRAIN_MAX_ISA: %s\n",
                   std::string(cap.status().message()).c_str());
      return DetectedIsa();
    }
    return HighestRunnable(Cpu(), *cap);
  }();
  return kActive;
}

absl::Status ValidateIsaEnvironment() {
  const std::string setting = IsaCapSetting();
  return setting.empty() ? absl::OkStatus() : ParseIsa(setting).status();
}

std::vector<Isa> RunnableIsas() {
  std::vector<Isa> out;
  for (Isa isa : kAllIsas) {
    if (isa != Isa::kBaseline && Has(Cpu(), Needs(isa))) out.push_back(isa);
  }
  return out;
}

std::string CpuBrand() {
  unsigned regs[12] = {};
  if (__get_cpuid_max(0x80000000, nullptr) < 0x80000004) return "";
  for (unsigned i = 0; i < 3; ++i) {
    __get_cpuid(0x80000002 + i, &regs[i * 4], &regs[i * 4 + 1], &regs[i * 4 + 2], &regs[i * 4 + 3]);
  }
  char brand[49] = {};
  std::memcpy(brand, regs, 48);
  return std::string(absl::StripAsciiWhitespace(brand));
}

std::string CpuSummary() {
  std::string out = absl::StrCat(CpuBrand(), " | ", IsaName(DetectedIsa()));
  const std::string setting = IsaCapSetting();
  if (!setting.empty()) {
    if (ParseIsa(setting).ok()) {
      absl::StrAppend(&out, " (capped by QTRAIN_MAX_ISA=", setting, " to ", IsaName(ActiveIsa()),
                      ")");
    } else {
      absl::StrAppend(&out, " (QTRAIN_MAX_ISA=", setting, " ignored: not a level)");
    }
  }
  return out;
}

}  // namespace qtrain
