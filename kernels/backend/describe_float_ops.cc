// What runs each representative float op: DescribeFloatKernels (float_gemm.h) for GetServerInfo
// and `qtrain info --verbose`. Runs the ops once on a oneDNN backend, which names the primitive
// each created (Backend::CachedImplementations).
#include <algorithm>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend/float_gemm.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

// The implementations of the primitives `run` makes `backend` create (none when cached already).
template <typename Run>
absl::StatusOr<std::vector<std::string>> NewImpls(Backend& backend, Run&& run) {
  const std::map<std::string, std::string> before = backend.CachedImplementations();
  QTRAIN_RETURN_IF_ERROR(run());
  std::vector<std::string> impls;
  for (const auto& [key, impl] : backend.CachedImplementations()) {
    if (before.count(key) == 0) impls.push_back(impl);
  }
  return impls;
}

// One candidate list per op: the backend's primitive (by its library's name) first, the
// reference loops, which only the conformance tests run, after it; or the backend's own loop
// where the library has no primitive.
absl::StatusOr<std::vector<ImplReport>> DescribeOtherOps(Backend& backend) {
  std::vector<ImplReport> out;
  const auto add = [&](const std::string& op, auto&& run) -> absl::Status {
    QTRAIN_ASSIGN_OR_RETURN(std::vector<std::string> impls, NewImpls(backend, run));
    ImplReport r;
    r.op = op;
    for (const std::string& impl : impls) {
      r.candidates.push_back({absl::StrCat(backend.name(), ":", impl), true, "its primitive"});
    }
    if (r.candidates.empty()) {
      r.candidates.push_back({backend.name(), false, "oneDNN 2.6 has no primitive for it"});
      r.candidates.push_back({"loops", true, "the reference loop, parallel over rows"});
      r.chosen = "loops";
    } else {
      r.chosen = r.candidates.front().name;
      r.candidates.push_back({"reference", true, "plain loops: the conformance tests' yardstick"});
    }
    out.push_back(std::move(r));
    return absl::OkStatus();
  };
  const ConvDesc conv{32, 28, 28, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1};
  std::vector<float> src(32 * 28 * 28 * 64, 0.5f), w(3 * 3 * 32 * 64, 0.25f);
  std::vector<float> dst(src.size()), mean(64), var(64);
  QTRAIN_RETURN_IF_ERROR(add("conv f32 32x28x28x32 * 3x3x32x64", [&] {
    return backend.ConvFwdF32(conv, src.data(), w.data(), dst.data());
  }));
  QTRAIN_RETURN_IF_ERROR(add("conv f32 backward data", [&] {
    return backend.ConvBwdData(conv, dst.data(), w.data(), src.data());
  }));
  QTRAIN_RETURN_IF_ERROR(add("conv f32 backward weights", [&] {
    return backend.ConvBwdWeights(conv, src.data(), dst.data(), w.data());
  }));
  QTRAIN_RETURN_IF_ERROR(add("gelu 2048x512", [&] {
    return backend.EltwiseFwd(EltwiseKind::kGeluTanh, 2048 * 512, src.data(), dst.data());
  }));
  QTRAIN_RETURN_IF_ERROR(add("gelu backward 2048x512", [&] {
    return backend.EltwiseBwd(EltwiseKind::kGeluTanh, 2048 * 512, src.data(), src.data(),
                              dst.data());
  }));
  std::vector<float> rows_mean(2048), rows_var(2048);
  QTRAIN_RETURN_IF_ERROR(add("layer norm 2048x512", [&] {
    return backend.LayerNormFwd(2048, 512, 1e-5f, src.data(), w.data(), w.data(), dst.data(),
                                rows_mean.data(), rows_var.data());
  }));
  QTRAIN_RETURN_IF_ERROR(add("batch norm 25088x64 (training)", [&] {
    return backend.BatchNormFwd(25088, 64, 1e-5f, true, src.data(), w.data(), w.data(), mean.data(),
                                var.data(), dst.data());
  }));
  QTRAIN_RETURN_IF_ERROR(add("softmax 2048x128", [&] {
    return backend.SoftmaxFwd(2048, 128, false, src.data(), dst.data());
  }));
  const PoolDesc pool{32, 28, 28, 64, 3, 3, 2, 2, 1, 1, 1, 1, true};
  QTRAIN_RETURN_IF_ERROR(add("max pool 3x3/2 32x28x28x64",
                             [&] { return backend.PoolFwd(pool, src.data(), dst.data()); }));
  const RotaryDesc rotary{2048, 128, 64, false};
  QTRAIN_RETURN_IF_ERROR(add("rotary 2048x64", [&] {
    return backend.Rotary(rotary, w.data(), w.data(), src.data(), dst.data());
  }));
  // The small ops no library covers: HostBackend's loops (host_backend.cc) on every CPU backend.
  const std::pair<const char*, const char*> host_loops[] = {
      {"rms norm (rows)", "per-row loop, rows in parallel, double sum of squares"},
      {"bias add / bias gradient (rows)", "broadcast / column sums, vectorised"},
      {"strided block copy (heads, tokens)", "block copies"},
      {"embedding gather / scatter-add", "row copies after an id check"},
      {"attention mask, dropout mask", "the reference loops"},
      {"softmax cross-entropy", "the backend's log-softmax, then the reference loop"},
      {"AdamW / SGD update, sum of squares", "row_ops' per-ISA loops (same bits at every ISA)"},
      {"calibration, quantize / dequantize",
       "calibration.cc / quantize.cc; per-row absmax fused with the int8 quantize (row_ops)"},
      {"quantized dot / conv (QAT, QT, SRQ)",
       "qdot.cc / qconv.cc over this backend's int8 and f32 matmuls and convolutions"},
  };
  for (const auto& [op, how] : host_loops) {
    ImplReport r;
    r.op = op;
    r.candidates.push_back({"host loop", true, how});
    r.candidates.push_back({"reference", true, "plain loops: the conformance tests' yardstick"});
    r.chosen = "host loop";
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::vector<ImplReport>> DescribeFloatKernels() {
  QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeOnednnBackend());
  constexpr int64_t kM = 256, kK = 1024, kN = 1024;
  std::vector<float> a(kM * kK, 0.5f), b(kK * kN, 0.25f), c(kK * kN);  // dw's C is (K, N)
  MatmulDesc forward{kM, kK, kN};
  MatmulDesc dx{kM, kN, kK};  // g (M,N) · wᵀ
  dx.trans_b = true;
  MatmulDesc dw{kK, kM, kN};  // xᵀ · g
  dw.trans_a = true;
  for (const MatmulDesc& d : {forward, dx, dw}) {
    QTRAIN_RETURN_IF_ERROR(backend->MatmulF32(d, a.data(), b.data(), c.data()));
  }
  QTRAIN_ASSIGN_OR_RETURN(std::vector<ImplReport> others, DescribeOtherOps(*backend));
  std::vector<ImplReport> out = FloatGemmChoices();
  out.insert(out.end(), others.begin(), others.end());
  return out;
}

}  // namespace qtrain
