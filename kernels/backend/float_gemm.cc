#include "kernels/backend/float_gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "kernels/cpu_isa.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"

namespace qtrain {
namespace {

constexpr double kOpenblasMargin = 0.9;  // OpenBLAS must take at most 90 % of oneDNN's time

struct FloatGemmChoice {
  FloatGemmImpl impl = FloatGemmImpl::kOnednn;
  ImplReport report;
};

// The policies by name.
constexpr std::pair<const char*, FloatGemmPolicy> kPolicies[] = {
    {"auto", FloatGemmPolicy::kAuto},
    {"onednn", FloatGemmPolicy::kOnednn},
    {"openblas", FloatGemmPolicy::kOpenblas},
};

struct Registry {
  qtrain::Mutex mu;
  FloatGemmPolicy policy ABSL_GUARDED_BY(mu) = FloatGemmPolicy::kAuto;
  std::map<std::string, FloatGemmChoice> choices ABSL_GUARDED_BY(mu);
};

Registry& GetRegistry() {
  static Registry* r = [] {
    auto* reg = new Registry;
    if (const char* env = std::getenv("QTRAIN_FLOAT_GEMM"); env != nullptr && *env != '\0') {
      auto p = ParseFloatGemmPolicy(env);
      if (p.ok()) {
        reg->policy = *p;
      } else {
        std::fprintf(stderr, "qtrain: QTRAIN_FLOAT_GEMM: %s; using auto\n",
                     std::string(p.status().message()).c_str());
      }
    }
    return reg;
  }();
  return *r;
}

// The ISA level OpenBLAS's kernels need, from the core name its dynamic dispatch chose.
Isa OpenblasIsa(const std::string& core) {
  for (const char* avx512 : {"SkylakeX", "Cooperlake", "SapphireRapids"}) {
    if (core == avx512) return Isa::kAvx512;
  }
  for (const char* avx2 : {"Haswell", "Zen"}) {
    if (core == avx2) return Isa::kAvx2;
  }
  return Isa::kBaseline;  // Sandybridge's AVX and older: below qtrain's AVX2 level either way
}

std::string OpName(const MatmulDesc& d) {
  return absl::StrCat("matmul f32 ", d.m, "x", d.k, "x", d.n, d.trans_a ? " A^T" : "",
                      d.trans_b ? " B^T" : "");
}

double Seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string Ms(double s) { return absl::StrFormat("%.3f ms", s * 1e3); }

}  // namespace

absl::StatusOr<FloatGemmPolicy> ParseFloatGemmPolicy(absl::string_view name) {
  for (const auto& [known, policy] : kPolicies) {
    if (name == known) return policy;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("float GEMM \"", name, "\" is not one of auto, onednn, openblas"));
}

const char* FloatGemmPolicyName(FloatGemmPolicy p) {
  for (const auto& [name, policy] : kPolicies) {
    if (policy == p) return name;
  }
  return "auto";
}

void SetFloatGemmPolicy(FloatGemmPolicy p) {
  Registry& r = GetRegistry();
  qtrain::MutexLock lock(&r.mu);
  r.policy = p;
  r.choices.clear();
}

FloatGemmPolicy GetFloatGemmPolicy() {
  Registry& r = GetRegistry();
  qtrain::MutexLock lock(&r.mu);
  return r.policy;
}

std::string OpenblasUnsupported(const MatmulDesc& d) {
  if (openblas_get_parallel() == 1) {
    return "this OpenBLAS runs its own pthreads pool, which would compete with OpenMP's "
           "(install libopenblas0-openmp)";
  }
  const std::string core = openblas_get_corename();
  if (OpenblasIsa(core) > ActiveIsa()) {
    return absl::StrCat("its ", core, " kernels need ", IsaName(OpenblasIsa(core)),
                        ", above the active ISA ", IsaName(ActiveIsa()),
                        " (OPENBLAS_CORETYPE=Haswell caps it)");
  }
  for (int64_t v : {d.m, d.k, d.n, Lda(d), Ldb(d), Ldc(d)}) {
    if (v > INT_MAX) return absl::StrCat("dimension ", v, " exceeds its 32-bit integers");
  }
  return "";
}

void OpenblasMatmul(const MatmulDesc& d, const float* a, const float* b, float* c) {
  cblas_sgemm(CblasRowMajor, d.trans_a ? CblasTrans : CblasNoTrans,
              d.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(d.m), static_cast<int>(d.n),
              static_cast<int>(d.k), 1.0f, a, static_cast<int>(Lda(d)), b, static_cast<int>(Ldb(d)),
              d.accumulate ? 1.0f : 0.0f, c, static_cast<int>(Ldc(d)));
}

absl::StatusOr<FloatGemmImpl> ChooseFloatGemm(
    const MatmulDesc& d, const float* a, const float* b, const std::string& onednn_name,
    const std::function<absl::Status(float*)>& run_onednn) {
  const std::string key =
      absl::StrCat(d.m, ",", d.k, ",", d.n, ",", Lda(d), ",", Ldb(d), ",", Ldc(d), ",", d.trans_a,
                   d.trans_b, "@t", omp_get_max_threads());
  Registry& r = GetRegistry();
  FloatGemmPolicy policy;
  {
    qtrain::MutexLock lock(&r.mu);
    auto it = r.choices.find(key);
    if (it != r.choices.end()) return it->second.impl;
    policy = r.policy;
  }
  FloatGemmChoice choice;
  ImplReport& report = choice.report;
  report.op = absl::StrCat(OpName(d), ", ", omp_get_max_threads(), " threads");
  const std::string blas_name = absl::StrCat("openblas:", openblas_get_corename());
  const std::string unsupported = OpenblasUnsupported(d);
  ImplCandidate onednn{absl::StrCat("onednn:", onednn_name), true, "every f32 matmul"};
  ImplCandidate blas{blas_name, unsupported.empty(), unsupported};
  if (policy == FloatGemmPolicy::kOnednn) {
    if (blas.supported) blas.reason = "not chosen: the float GEMM is pinned to onednn";
  } else if (policy == FloatGemmPolicy::kOpenblas) {
    if (blas.supported) {
      choice.impl = FloatGemmImpl::kOpenblas;
      blas.reason = "pinned (float GEMM openblas)";
    }
  } else if (blas.supported) {
    // Time both on the call's operands, into scratch: the best of a few interleaved runs.
    std::vector<float> scratch(static_cast<size_t>(d.m * Ldc(d)), 0.0f);
    const double flops = 2.0 * static_cast<double>(d.m) * d.k * d.n;
    const int reps = static_cast<int>(std::clamp(5e7 / flops, 2.0, 20.0));
    absl::Status s = run_onednn(scratch.data());  // warm: primitive creation, caches
    OpenblasMatmul(d, a, b, scratch.data());
    double t_onednn = 1e30, t_blas = 1e30;
    for (int i = 0; i < reps && s.ok(); ++i) {
      t_onednn = std::min(t_onednn, Seconds([&] { s = run_onednn(scratch.data()); }));
      t_blas = std::min(t_blas, Seconds([&] { OpenblasMatmul(d, a, b, scratch.data()); }));
    }
    QTRAIN_RETURN_IF_ERROR(s);
    const bool faster = t_blas <= kOpenblasMargin * t_onednn;
    if (faster) choice.impl = FloatGemmImpl::kOpenblas;
    onednn.reason = absl::StrCat("measured ", Ms(t_onednn));
    blas.reason = absl::StrCat("measured ", Ms(t_blas),
                               faster ? " (at least 10 % faster)" : " (not 10 % faster)");
  }
  report.candidates = {onednn, blas};
  report.chosen = choice.impl == FloatGemmImpl::kOpenblas ? blas.name : onednn.name;
  qtrain::MutexLock lock(&r.mu);
  // A concurrent first call's choice, if it got there first.
  return r.choices.emplace(key, std::move(choice)).first->second.impl;
}

std::vector<ImplReport> FloatGemmChoices() {
  Registry& r = GetRegistry();
  qtrain::MutexLock lock(&r.mu);
  std::vector<ImplReport> out;
  for (const auto& [key, choice] : r.choices) out.push_back(choice.report);
  std::sort(out.begin(), out.end(),
            [](const ImplReport& x, const ImplReport& y) { return x.op < y.op; });
  return out;
}

}  // namespace qtrain
