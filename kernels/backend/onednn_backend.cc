// oneDNN 2.6 backend. oneDNN types stay in this file.
//
// Primitives are created once per (op, shape, layout, dtype, post-op kind) and cached in the
// backend instance; per-step values (scales, pointers) are passed at execute time, scales as
// binary_mul post-op tensors so the int8 matmul keeps the brgemm VNNI kernel. Scratchpads are
// user-managed: one growable buffer per backend (one backend per executor thread).
//
// Int8 ops go through the candidate list of int8_kernels.h: oneDNN's int8 primitives only where
// they are VNNI/AMX kernels (exact), qtrain's exact GEMM elsewhere, the reference loops last.
// F32 matmuls go through float_gemm.h's: oneDNN's, or OpenBLAS's where it measures faster.
#include <omp.h>
#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <iterator>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/backend/exact_int8_ops.h"
#include "kernels/backend/float_gemm.h"
#include "kernels/backend/host_backend.h"
#include "kernels/backend/int8_kernels.h"
#include "kernels/backend/onednn_int8_route.h"
#include "kernels/backend/reference_ops.h"
#include "kernels/cpu_isa.h"
#include "kernels/status_macros.h"
#include "kernels/tensor.h"

namespace qtrain {
namespace {

using dnnl::memory;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;

absl::Status DnnlError(const dnnl::error& e, absl::string_view what) {
  return absl::InternalError(absl::StrCat("oneDNN ", what, ": ", e.what()));
}

memory::desc MatrixDesc(int64_t rows, int64_t cols, dt type, int64_t ld, bool transposed) {
  // Element (r, c) lives at r*ld + c, or at c*ld + r when stored transposed.
  return transposed ? memory::desc({rows, cols}, type, memory::dims{1, ld})
                    : memory::desc({rows, cols}, type, memory::dims{ld, 1});
}

// Int8 matmuls use rank-3 descriptors with a batch of 1: oneDNN 2.6's brgemm kernel takes a
// (1,M,1) binary post-op (per_oc broadcast) but not the rank-2 (M,1) one, which falls back to
// ref_int8. Element (r, c) at r*ld + c.
memory::desc Matrix3d(int64_t rows, int64_t cols, dt type, int64_t ld, bool transposed = false) {
  return transposed ? memory::desc({1, rows, cols}, type, memory::dims{cols * ld, 1, ld})
                    : memory::desc({1, rows, cols}, type, memory::dims{rows * ld, ld, 1});
}

struct CachedPrimitive {
  dnnl::primitive prim;
  size_t scratchpad_bytes = 0;
  std::string impl;
  // Convolutions: oneDNN's preferred weights layout and the reorders to and from the user's.
  memory::desc weights_md;
  memory::desc user_weights_md;
  bool reorder_weights = false;
  dnnl::reorder weights_reorder;
  memory::desc workspace_md;  // max pooling's arg-max workspace
  uint64_t last_used = 0;     // the TrimCache generation
};

class OnednnBackend final : public HostBackend {
 public:
  OnednnBackend() : engine_(MakeEngine()), stream_(engine_) {}

  static dnnl::engine MakeEngine() {
    ApplyIsaCapToOnednn();
    return dnnl::engine(dnnl::engine::kind::cpu, 0);
  }

  const char* name() const override { return "onednn"; }

  absl::Status MatmulF32(const MatmulDesc& d, const float* a, const float* b, float* c) override {
    QTRAIN_RETURN_IF_ERROR(ValidateMatmulDesc(d));
    try {
      const std::string key =
          absl::StrCat("mmf32:", d.m, ",", d.k, ",", d.n, ",", Lda(d), ",", Ldb(d), ",", Ldc(d),
                       ",", d.trans_a, d.trans_b, d.accumulate);
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p, GetOrCreate(key, [&] {
                                dnnl::post_ops po;
                                if (d.accumulate) po.append_sum(1.0f);
                                return MakeMatmul(MatrixDesc(d.m, d.k, dt::f32, Lda(d), d.trans_a),
                                                  MatrixDesc(d.k, d.n, dt::f32, Ldb(d), d.trans_b),
                                                  MatrixDesc(d.m, d.n, dt::f32, Ldc(d), false), po);
                              }));
      const auto run_onednn = [&](float* out) -> absl::Status {
        try {
          std::unordered_map<int, memory> args;
          args[DNNL_ARG_SRC] = Mem(MatrixDesc(d.m, d.k, dt::f32, Lda(d), d.trans_a), a);
          args[DNNL_ARG_WEIGHTS] = Mem(MatrixDesc(d.k, d.n, dt::f32, Ldb(d), d.trans_b), b);
          args[DNNL_ARG_DST] = Mem(MatrixDesc(d.m, d.n, dt::f32, Ldc(d), false), out);
          Execute(*p, args);
        } catch (const dnnl::error& e) {
          return DnnlError(e, "f32 matmul");
        }
        return absl::OkStatus();
      };
      // The candidate list of float_gemm.h, chosen once per shape.
      QTRAIN_ASSIGN_OR_RETURN(const FloatGemmImpl impl,
                              ChooseFloatGemm(d, a, b, p->impl, run_onednn));
      if (impl == FloatGemmImpl::kOpenblas) {
        OpenblasMatmul(d, a, b, c);
        return absl::OkStatus();
      }
      return run_onednn(c);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "f32 matmul");
    }
  }

  absl::Status MatmulInt8(const Int8MatmulDesc& d, const void* a, const int8_t* b,
                          const float* row_scale, const float* col_scale, float* c) override {
    const MatmulDesc& m = d.mm;
    QTRAIN_RETURN_IF_ERROR(ValidateInt8MatmulDesc(d));
    QTRAIN_ASSIGN_OR_RETURN(const RoutedOp* op,
                            RouteInt8Matmul(d, row_scale != nullptr, col_scale != nullptr));
    if (op->route.kind == Int8Route::Kind::kExact) {
      return ExactInt8Matmul(op->route.exact, d, a, b, row_scale, col_scale, c);
    }
    if (op->route.kind == Int8Route::Kind::kReference) {
      return reference_->MatmulInt8(d, a, b, row_scale, col_scale, c);
    }
    try {
      const dt a_type = d.a_unsigned ? dt::u8 : dt::s8;
      std::unordered_map<int, memory> args;
      args[DNNL_ARG_SRC] = Mem(Matrix3d(m.m, m.k, a_type, Lda(m)), a);
      args[DNNL_ARG_WEIGHTS] = Mem(Matrix3d(m.k, m.n, dt::s8, Ldb(m), m.trans_b), b);
      args[DNNL_ARG_DST] = Mem(Matrix3d(m.m, m.n, dt::f32, Ldc(m)), c);
      int post_op = 0;
      if (row_scale) {
        args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op++) | DNNL_ARG_SRC_1] =
            Mem(memory::desc({1, m.m, 1}, dt::f32, tag::abc), row_scale);
      }
      if (col_scale) {
        args[DNNL_ARG_ATTR_MULTIPLE_POST_OP(post_op++) | DNNL_ARG_SRC_1] =
            Mem(memory::desc({1, 1, m.n}, dt::f32, tag::abc), col_scale);
      }
      Execute(*op->primitive, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "int8 matmul");
    }
    return absl::OkStatus();
  }

  static std::string Int8MatmulKey(const Int8MatmulDesc& d, bool row_scale, bool col_scale) {
    const MatmulDesc& m = d.mm;
    return absl::StrCat("mms8:", m.m, ",", m.k, ",", m.n, ",", Lda(m), ",", Ldb(m), ",", Ldc(m),
                        ",", d.a_unsigned, row_scale, col_scale, m.accumulate, m.trans_b);
  }

  absl::StatusOr<CachedPrimitive*> GetInt8Matmul(const Int8MatmulDesc& d, bool row_scale,
                                                 bool col_scale) {
    const MatmulDesc& m = d.mm;
    return GetOrCreate(Int8MatmulKey(d, row_scale, col_scale), [&] {
      dnnl::post_ops po;
      if (row_scale) {
        po.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, m.m, 1}, dt::f32, tag::abc));
      }
      if (col_scale) {
        po.append_binary(dnnl::algorithm::binary_mul, memory::desc({1, 1, m.n}, dt::f32, tag::abc));
      }
      if (m.accumulate) {
        po.append_sum(1.0f);
      }
      return MakeMatmul(Matrix3d(m.m, m.k, d.a_unsigned ? dt::u8 : dt::s8, Lda(m)),
                        Matrix3d(m.k, m.n, dt::s8, Ldb(m), m.trans_b),
                        Matrix3d(m.m, m.n, dt::f32, Ldc(m)), po);
    });
  }

  absl::Status ConvFwdF32(const ConvDesc& d, const float* src, const float* weights,
                          float* dst) override {
    return ConvForward(d, dt::f32, dt::f32, src, weights, dst);
  }

  absl::Status ConvFwdInt8(const ConvDesc& d, const int8_t* src, const int8_t* weights,
                           int32_t* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    QTRAIN_ASSIGN_OR_RETURN(const RoutedOp* op, RouteInt8Conv(d));
    if (op->route.kind == Int8Route::Kind::kExact) {
      return ExactInt8Conv(op->route.exact, d, src, weights, dst);
    }
    if (op->route.kind == Int8Route::Kind::kReference) {
      return reference_->ConvFwdInt8(d, src, weights, dst);
    }
    return ConvForward(d, dt::s8, dt::s32, src, weights, dst);
  }

  // An int8 op's route and, when it runs oneDNN, its primitive (owned by cache_).
  struct RoutedOp {
    Int8Route route;
    CachedPrimitive* primitive = nullptr;
    uint64_t last_used = 0;  // the TrimCache generation
  };

  // Every batch size is a new shape: a client cycling through sizes would grow the caches
  // without end. Between steps, caches over kMaxCached entries drop their least recently used
  // half (routes go with the primitives they point to).
  static constexpr size_t kMaxCached = 512;
  size_t CacheEntries() const override { return cache_.size() + routes_.size(); }
  std::map<std::string, std::string> CachedImplementations() const override {
    std::map<std::string, std::string> out;
    for (const auto& [key, p] : cache_) out.emplace(key, p.impl);
    return out;
  }
  void TrimCache() override {
    ++generation_;
    if (cache_.size() <= kMaxCached && routes_.size() <= kMaxCached) return;
    std::vector<uint64_t> ages;
    for (const auto& [key, p] : cache_) ages.push_back(p.last_used);
    for (const auto& [key, r] : routes_) ages.push_back(r.last_used);
    std::nth_element(ages.begin(), ages.begin() + ages.size() / 2, ages.end());
    const uint64_t keep_from = ages[ages.size() / 2];  // drop what is older than the median
    for (auto it = routes_.begin(); it != routes_.end();) {
      const bool stale = it->second.last_used < keep_from ||
                         (it->second.primitive && it->second.primitive->last_used < keep_from);
      it = stale ? routes_.erase(it) : std::next(it);
    }
    for (auto it = cache_.begin(); it != cache_.end();) {
      it = it->second.last_used < keep_from ? cache_.erase(it) : std::next(it);
    }
  }

  // The int8 candidate list (int8_kernels.h) for one op and shape, decided once. `base_key` is
  // the primitive's cache key: routes are per thread count like the primitives they check.
  template <typename GetPrimitive>
  absl::StatusOr<const RoutedOp*> Route(const std::string& base_key, std::string op,
                                        GetPrimitive&& get_primitive) {
    const std::string key = ThreadKey(base_key);
    auto it = routes_.find(key);
    if (it != routes_.end()) {
      it->second.last_used = generation_;
      if (it->second.primitive != nullptr) it->second.primitive->last_used = generation_;
      return &it->second;
    }
    RoutedOp r;
    r.last_used = generation_;
    r.route.report.op = std::move(op);
    if (HasVnni(ActiveIsa())) {
      QTRAIN_ASSIGN_OR_RETURN(r.primitive, get_primitive());
    }
    ChooseRoute(r.primitive != nullptr ? r.primitive->impl : "", r.route);
    return &routes_.emplace(key, std::move(r)).first->second;
  }

  absl::StatusOr<const RoutedOp*> RouteInt8Matmul(const Int8MatmulDesc& d, bool row_scale,
                                                  bool col_scale) {
    const MatmulDesc& m = d.mm;
    return Route(Int8MatmulKey(d, row_scale, col_scale),
                 absl::StrCat("matmul ", d.a_unsigned ? "u8" : "s8", "xs8", m.trans_b ? "^T " : " ",
                              m.m, "x", m.k, "x", m.n),
                 [&] { return GetInt8Matmul(d, row_scale, col_scale); });
  }

  absl::StatusOr<const RoutedOp*> RouteInt8Conv(const ConvDesc& d) {
    return Route(ConvFwdKey(d, dt::s8),
                 absl::StrCat("conv s8xs8 ", d.n, "x", d.h, "x", d.w, "x", d.c, " * ", d.kh, "x",
                              d.kw, "x", d.group_c(), "x", d.o,
                              d.groups == 1     ? ""
                              : d.groups == d.c ? " depthwise"
                                                : absl::StrCat(" groups ", d.groups),
                              d.dilation_h * d.dilation_w == 1
                                  ? ""
                                  : absl::StrCat(" dilation ", d.dilation_h, "x", d.dilation_w)),
                 [&] { return GetConvFwd(d, dt::s8, dt::s32); });
  }

  absl::Status ConvBwdData(const ConvDesc& d, const float* diff_dst, const float* weights,
                           float* diff_src) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    try {
      const std::string key = absl::StrCat("convbd:", ConvKey(d));
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(key, [&] {
            auto fwd = ConvFwdPd(d, dt::f32, dt::f32);
            dnnl::convolution_backward_data::desc bd(
                dnnl::algorithm::convolution_direct, SrcMd(d, dt::f32), AnyWeightsMd(d, dt::f32),
                DstMd(d, dt::f32), Strides(d), Dilates(d), PadL(d), PadR(d));
            dnnl::convolution_backward_data::primitive_desc pd(bd, UserAttr(), engine_, fwd);
            CachedPrimitive cp = Finish(dnnl::convolution_backward_data(pd), pd);
            SetWeightsReorder(cp, pd.weights_desc(), d, dt::f32, /*to_user=*/false);
            return cp;
          }));
      std::unordered_map<int, memory> args;
      args[DNNL_ARG_DIFF_DST] = Mem(DstMd(d, dt::f32), diff_dst);
      args[DNNL_ARG_WEIGHTS] = WeightsIn(*p, d, dt::f32, weights);
      args[DNNL_ARG_DIFF_SRC] = Mem(SrcMd(d, dt::f32), diff_src);
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "convolution backward data");
    }
    return absl::OkStatus();
  }

  absl::Status ConvBwdWeights(const ConvDesc& d, const float* src, const float* diff_dst,
                              float* diff_weights) override {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    try {
      const std::string key = absl::StrCat("convbw:", ConvKey(d));
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(key, [&] {
            auto fwd = ConvFwdPd(d, dt::f32, dt::f32);
            dnnl::convolution_backward_weights::desc bd(
                dnnl::algorithm::convolution_direct, SrcMd(d, dt::f32), AnyWeightsMd(d, dt::f32),
                DstMd(d, dt::f32), Strides(d), Dilates(d), PadL(d), PadR(d));
            dnnl::convolution_backward_weights::primitive_desc pd(bd, UserAttr(), engine_, fwd);
            CachedPrimitive cp = Finish(dnnl::convolution_backward_weights(pd), pd);
            SetWeightsReorder(cp, pd.diff_weights_desc(), d, dt::f32, /*to_user=*/true);
            return cp;
          }));
      std::unordered_map<int, memory> args;
      args[DNNL_ARG_SRC] = Mem(SrcMd(d, dt::f32), src);
      args[DNNL_ARG_DIFF_DST] = Mem(DstMd(d, dt::f32), diff_dst);
      memory user = Mem(p->user_weights_md, diff_weights);
      memory inner = p->reorder_weights ? memory(p->weights_md, engine_) : user;
      args[DNNL_ARG_DIFF_WEIGHTS] = inner;
      Execute(*p, args);
      if (p->reorder_weights) {
        p->weights_reorder.execute(stream_, inner, user);
        stream_.wait();
      }
    } catch (const dnnl::error& e) {
      return DnnlError(e, "convolution backward weights");
    }
    return absl::OkStatus();
  }

  absl::Status EltwiseFwd(EltwiseKind kind, int64_t n, const float* src, float* dst) override {
    if (n <= 0) {
      return absl::OkStatus();
    }
    try {
      const memory::desc md({n}, dt::f32, tag::a);
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p, GetOrCreate(EltKey("eltf", kind, n), [&] {
                                auto pd = EltwiseFwdPd(kind, md);
                                return Finish(dnnl::eltwise_forward(pd), pd);
                              }));
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, Mem(md, src)},
                                           {DNNL_ARG_DST, Mem(md, dst)}};
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "eltwise forward");
    }
    return absl::OkStatus();
  }

  absl::Status EltwiseBwd(EltwiseKind kind, int64_t n, const float* src, const float* diff_dst,
                          float* diff_src) override {
    if (n <= 0) {
      return absl::OkStatus();
    }
    try {
      const memory::desc md({n}, dt::f32, tag::a);
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p, GetOrCreate(EltKey("eltb", kind, n), [&] {
                                auto [algo, alpha] = EltAlgo(kind);
                                dnnl::eltwise_backward::desc bd(algo, md, md, alpha, EltBeta(kind));
                                dnnl::eltwise_backward::primitive_desc pd(bd, UserAttr(), engine_,
                                                                          EltwiseFwdPd(kind, md));
                                return Finish(dnnl::eltwise_backward(pd), pd);
                              }));
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, Mem(md, src)},
                                           {DNNL_ARG_DIFF_DST, Mem(md, diff_dst)},
                                           {DNNL_ARG_DIFF_SRC, Mem(md, diff_src)}};
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "eltwise backward");
    }
    return absl::OkStatus();
  }

  absl::Status Binary(BinaryKind kind, int64_t n, const float* a, const float* b,
                      float* dst) override {
    if (n <= 0) {
      return absl::OkStatus();
    }
    try {
      const memory::desc md({n}, dt::f32, tag::a);
      const bool add = kind == BinaryKind::kAdd;
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(absl::StrCat(add ? "add:" : "mul:", n), [&] {
            dnnl::binary::desc bd(add ? dnnl::algorithm::binary_add : dnnl::algorithm::binary_mul,
                                  md, md, md);
            dnnl::binary::primitive_desc pd(bd, UserAttr(), engine_);
            return Finish(dnnl::binary(pd), pd);
          }));
      std::unordered_map<int, memory> args{
          {DNNL_ARG_SRC_0, Mem(md, a)}, {DNNL_ARG_SRC_1, Mem(md, b)}, {DNNL_ARG_DST, Mem(md, dst)}};
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "binary");
    }
    return absl::OkStatus();
  }

  // A reorder from row-major (rows, cols) to column-major: oneDNN's JIT transpose.
  absl::Status Transpose(int64_t rows, int64_t cols, const float* src, float* dst) override {
    if (rows <= 0 || cols <= 0) {
      return absl::OkStatus();
    }
    try {
      const memory::desc from({rows, cols}, dt::f32, tag::ab), to({rows, cols}, dt::f32, tag::ba);
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(absl::StrCat("transpose:", rows, "x", cols), [&] {
            dnnl::reorder::primitive_desc pd(engine_, from, engine_, to, UserAttr());
            return Finish(dnnl::reorder(pd), pd);
          }));
      std::unordered_map<int, memory> args{{DNNL_ARG_FROM, Mem(from, src)},
                                           {DNNL_ARG_TO, Mem(to, dst)}};
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "transpose");
    }
    return absl::OkStatus();
  }

  // oneDNN 2.6 has no rotary primitive: the reference loop (parallel over rows).
  absl::Status Rotary(const RotaryDesc& d, const float* cos, const float* sin, const float* src,
                      float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateRotaryDesc(d));
    reference::Rotary(d, cos, sin, src, dst);
    return absl::OkStatus();
  }

  absl::Status BatchNormFwd(int64_t rows, int64_t channels, float eps, bool batch_stats,
                            const float* src, const float* gamma, const float* beta, float* mean,
                            float* var, float* dst) override {
    try {
      const memory::desc md = BatchNormData(rows, channels), vec({channels}, dt::f32, tag::a);
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p,
          GetOrCreate(absl::StrCat("bnf:", rows, ",", channels, ",", eps, ",", batch_stats), [&] {
            auto pd = BatchNormFwdPd(md, eps, batch_stats);
            return Finish(dnnl::batch_normalization_forward(pd), pd);
          }));
      Execute(*p, NormFwdArgs(md, vec, vec, src, gamma, beta, mean, var, dst));
    } catch (const dnnl::error& e) {
      return DnnlError(e, "batch normalization forward");
    }
    return absl::OkStatus();
  }

  absl::Status BatchNormBwd(int64_t rows, int64_t channels, float eps, const float* src,
                            const float* mean, const float* var, const float* gamma,
                            const float* diff_dst, float* diff_src, float* diff_gamma,
                            float* diff_beta) override {
    try {
      const memory::desc md = BatchNormData(rows, channels), vec({channels}, dt::f32, tag::a);
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p,
          GetOrCreate(absl::StrCat("bnb:", rows, ",", channels, ",", eps), [&] {
            dnnl::batch_normalization_backward::desc bd(
                dnnl::prop_kind::backward, md, md, eps,
                dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift);
            dnnl::batch_normalization_backward::primitive_desc pd(
                bd, UserAttr(), engine_, BatchNormFwdPd(md, eps, /*batch_stats=*/true));
            return Finish(dnnl::batch_normalization_backward(pd), pd);
          }));
      Execute(*p, NormBwdArgs(md, vec, vec, src, mean, var, gamma, diff_dst, diff_src, diff_gamma,
                              diff_beta));
    } catch (const dnnl::error& e) {
      return DnnlError(e, "batch normalization backward");
    }
    return absl::OkStatus();
  }

  absl::Status LayerNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                            const float* gamma, const float* beta, float* dst, float* mean,
                            float* var) override {
    try {
      const memory::desc md({rows, cols}, dt::f32, tag::ab);
      const memory::desc stat({rows}, dt::f32, tag::a), vec({cols}, dt::f32, tag::a);
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p,
                              GetOrCreate(absl::StrCat("lnf:", rows, ",", cols, ",", eps), [&] {
                                auto pd = LayerNormFwdPd(md, stat, eps);
                                return Finish(dnnl::layer_normalization_forward(pd), pd);
                              }));
      Execute(*p, NormFwdArgs(md, stat, vec, src, gamma, beta, mean, var, dst));
    } catch (const dnnl::error& e) {
      return DnnlError(e, "layer normalization forward");
    }
    return absl::OkStatus();
  }

  absl::Status LayerNormBwd(int64_t rows, int64_t cols, float eps, const float* src,
                            const float* mean, const float* var, const float* gamma,
                            const float* diff_dst, float* diff_src, float* diff_gamma,
                            float* diff_beta) override {
    try {
      const memory::desc md({rows, cols}, dt::f32, tag::ab);
      const memory::desc stat({rows}, dt::f32, tag::a), vec({cols}, dt::f32, tag::a);
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(absl::StrCat("lnb:", rows, ",", cols, ",", eps), [&] {
            dnnl::layer_normalization_backward::desc bd(
                dnnl::prop_kind::backward, md, md, stat, eps,
                dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift);
            dnnl::layer_normalization_backward::primitive_desc pd(bd, UserAttr(), engine_,
                                                                  LayerNormFwdPd(md, stat, eps));
            return Finish(dnnl::layer_normalization_backward(pd), pd);
          }));
      Execute(*p, NormBwdArgs(md, stat, vec, src, mean, var, gamma, diff_dst, diff_src, diff_gamma,
                              diff_beta));
    } catch (const dnnl::error& e) {
      return DnnlError(e, "layer normalization backward");
    }
    return absl::OkStatus();
  }

  absl::Status SoftmaxFwd(int64_t rows, int64_t cols, bool log, const float* src,
                          float* dst) override {
    try {
      const memory::desc md({rows, cols}, dt::f32, tag::ab);
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p,
                              GetOrCreate(absl::StrCat("smf:", rows, ",", cols, ",", log), [&] {
                                auto pd = SoftmaxFwdPd(md, log);
                                return Finish(dnnl::softmax_v2_forward(pd), pd);
                              }));
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, Mem(md, src)},
                                           {DNNL_ARG_DST, Mem(md, dst)}};
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "softmax forward");
    }
    return absl::OkStatus();
  }

  absl::Status SoftmaxBwd(int64_t rows, int64_t cols, const float* dst, const float* diff_dst,
                          float* diff_src) override {
    try {
      const memory::desc md({rows, cols}, dt::f32, tag::ab);
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(absl::StrCat("smb:", rows, ",", cols), [&] {
            dnnl::softmax_v2_backward::desc bd(dnnl::algorithm::softmax_accurate, md, md, md, 1);
            dnnl::softmax_v2_backward::primitive_desc pd(bd, UserAttr(), engine_,
                                                         SoftmaxFwdPd(md, false));
            return Finish(dnnl::softmax_v2_backward(pd), pd);
          }));
      std::unordered_map<int, memory> args{{DNNL_ARG_DST, Mem(md, dst)},
                                           {DNNL_ARG_DIFF_DST, Mem(md, diff_dst)},
                                           {DNNL_ARG_DIFF_SRC, Mem(md, diff_src)}};
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "softmax backward");
    }
    return absl::OkStatus();
  }

  absl::Status PoolFwd(const PoolDesc& d, const float* src, float* dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
    try {
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p, GetOrCreate(PoolKey("poolf", d), [&] {
                                auto pd = PoolFwdPd(d);
                                CachedPrimitive cp = Finish(dnnl::pooling_forward(pd), pd);
                                cp.workspace_md = pd.workspace_desc();
                                return cp;
                              }));
      std::unordered_map<int, memory> args{{DNNL_ARG_SRC, Mem(PoolSrcMd(d), src)},
                                           {DNNL_ARG_DST, Mem(PoolDstMd(d), dst)}};
      if (p->workspace_md.get_size() > 0) {
        args[DNNL_ARG_WORKSPACE] = memory(p->workspace_md, engine_);
      }
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "pooling forward");
    }
    return absl::OkStatus();
  }

  // Max pooling needs the forward's workspace (arg-max positions): the forward is re-run here so
  // that callers keep only src, as for every other op.
  absl::Status PoolBwd(const PoolDesc& d, const float* src, const float* diff_dst,
                       float* diff_src) override {
    QTRAIN_RETURN_IF_ERROR(ValidatePoolDesc(d));
    try {
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * fwd, GetOrCreate(PoolKey("poolf", d), [&] {
                                auto pd = PoolFwdPd(d);
                                CachedPrimitive cp = Finish(dnnl::pooling_forward(pd), pd);
                                cp.workspace_md = pd.workspace_desc();
                                return cp;
                              }));
      QTRAIN_ASSIGN_OR_RETURN(
          CachedPrimitive * p, GetOrCreate(PoolKey("poolb", d), [&] {
            dnnl::pooling_backward::desc bd(PoolAlgo(d), PoolSrcMd(d), PoolDstMd(d),
                                            {d.stride_h, d.stride_w}, {d.kh, d.kw},
                                            {d.pad_top, d.pad_left}, {d.pad_bottom, d.pad_right});
            dnnl::pooling_backward::primitive_desc pd(bd, UserAttr(), engine_, PoolFwdPd(d));
            return Finish(dnnl::pooling_backward(pd), pd);
          }));
      memory workspace;
      if (fwd->workspace_md.get_size() > 0) {
        workspace = memory(fwd->workspace_md, engine_);
        memory scratch_dst(PoolDstMd(d), engine_);
        std::unordered_map<int, memory> fargs{{DNNL_ARG_SRC, Mem(PoolSrcMd(d), src)},
                                              {DNNL_ARG_DST, scratch_dst},
                                              {DNNL_ARG_WORKSPACE, workspace}};
        Execute(*fwd, fargs);
      }
      std::unordered_map<int, memory> args{{DNNL_ARG_DIFF_DST, Mem(PoolDstMd(d), diff_dst)},
                                           {DNNL_ARG_DIFF_SRC, Mem(PoolSrcMd(d), diff_src)}};
      if (fwd->workspace_md.get_size() > 0) {
        args[DNNL_ARG_WORKSPACE] = workspace;
      }
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "pooling backward");
    }
    return absl::OkStatus();
  }

  std::string ImplOf(const std::string& key) {
    auto it = cache_.find(key);
    return it == cache_.end() ? "" : it->second.impl;
  }

 private:
  // oneDNN fixes a primitive's parallelization when it is created, so the thread count is part
  // of the key: a primitive made for 1 thread would otherwise run on 1 thread forever.
  static std::string ThreadKey(const std::string& base_key) {
    return absl::StrCat(base_key, "@t", omp_get_max_threads());
  }
  template <typename Make>
  absl::StatusOr<CachedPrimitive*> GetOrCreate(const std::string& base_key, Make&& make) {
    const std::string key = ThreadKey(base_key);
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      it->second.last_used = generation_;
      return &it->second;
    }
    try {
      auto [pos, inserted] = cache_.emplace(key, make());
      pos->second.last_used = generation_;
      return &pos->second;
    } catch (const dnnl::error& e) {
      return DnnlError(e, absl::StrCat("primitive creation (", key, ")"));
    }
  }

  dnnl::primitive_attr UserAttr() const {
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    return attr;
  }

  template <typename Pd>
  CachedPrimitive Finish(dnnl::primitive prim, const Pd& pd) {
    CachedPrimitive cp;
    cp.prim = std::move(prim);
    cp.scratchpad_bytes = pd.scratchpad_desc().get_size();
    cp.impl = pd.impl_info_str();
    return cp;
  }

  CachedPrimitive MakeMatmul(const memory::desc& a, const memory::desc& b, const memory::desc& c,
                             const dnnl::post_ops& po) {
    dnnl::primitive_attr attr = UserAttr();
    attr.set_post_ops(po);
    dnnl::matmul::desc md(a, b, c);
    dnnl::matmul::primitive_desc pd(md, attr, engine_);
    return Finish(dnnl::matmul(pd), pd);
  }

  static std::pair<dnnl::algorithm, float> EltAlgo(EltwiseKind kind) {
    switch (kind) {
      case EltwiseKind::kRelu:
        return {dnnl::algorithm::eltwise_relu, 0.0f};
      case EltwiseKind::kGeluTanh:
        return {dnnl::algorithm::eltwise_gelu_tanh, 0.0f};
      case EltwiseKind::kSilu:
        return {dnnl::algorithm::eltwise_swish, 1.0f};
      case EltwiseKind::kTanh:
        return {dnnl::algorithm::eltwise_tanh, 0.0f};
      case EltwiseKind::kRelu6:
        return {dnnl::algorithm::eltwise_clip_v2, 0.0f};  // beta = 6 (EltBeta)
      case EltwiseKind::kHardSwish:
        return {dnnl::algorithm::eltwise_hardswish, 0.0f};
      case EltwiseKind::kSigmoid:
        return {dnnl::algorithm::eltwise_logistic, 0.0f};
      case EltwiseKind::kGeluErf:
        return {dnnl::algorithm::eltwise_gelu_erf, 0.0f};
    }
    return {dnnl::algorithm::eltwise_relu, 0.0f};
  }
  static float EltBeta(EltwiseKind kind) { return kind == EltwiseKind::kRelu6 ? 6.0f : 0.0f; }
  static std::string EltKey(const char* op, EltwiseKind kind, int64_t n) {
    return absl::StrCat(op, ":", static_cast<int>(kind), ",", n);
  }
  dnnl::eltwise_forward::primitive_desc EltwiseFwdPd(EltwiseKind kind, const memory::desc& md) {
    auto [algo, alpha] = EltAlgo(kind);
    dnnl::eltwise_forward::desc fd(dnnl::prop_kind::forward_training, algo, md, alpha,
                                   EltBeta(kind));
    return dnnl::eltwise_forward::primitive_desc(fd, UserAttr(), engine_);
  }
  // The arguments of a batch / layer normalization forward: `stat` describes mean and var,
  // `vec` gamma and beta.
  std::unordered_map<int, memory> NormFwdArgs(const memory::desc& md, const memory::desc& stat,
                                              const memory::desc& vec, const float* src,
                                              const float* gamma, const float* beta, float* mean,
                                              float* var, float* dst) {
    return {{DNNL_ARG_SRC, Mem(md, src)},      {DNNL_ARG_DST, Mem(md, dst)},
            {DNNL_ARG_SCALE, Mem(vec, gamma)}, {DNNL_ARG_SHIFT, Mem(vec, beta)},
            {DNNL_ARG_MEAN, Mem(stat, mean)},  {DNNL_ARG_VARIANCE, Mem(stat, var)}};
  }
  // ... and of its backward.
  std::unordered_map<int, memory> NormBwdArgs(const memory::desc& md, const memory::desc& stat,
                                              const memory::desc& vec, const float* src,
                                              const float* mean, const float* var,
                                              const float* gamma, const float* diff_dst,
                                              float* diff_src, float* diff_gamma,
                                              float* diff_beta) {
    return {{DNNL_ARG_SRC, Mem(md, src)},
            {DNNL_ARG_MEAN, Mem(stat, mean)},
            {DNNL_ARG_VARIANCE, Mem(stat, var)},
            {DNNL_ARG_SCALE, Mem(vec, gamma)},
            // oneDNN 2.6 wants a shift argument with use_shift even though the backward never
            // reads it; gamma (same shape, read-only) stands in.
            {DNNL_ARG_SHIFT, Mem(vec, gamma)},
            {DNNL_ARG_DIFF_DST, Mem(md, diff_dst)},
            {DNNL_ARG_DIFF_SRC, Mem(md, diff_src)},
            {DNNL_ARG_DIFF_SCALE, Mem(vec, diff_gamma)},
            {DNNL_ARG_DIFF_SHIFT, Mem(vec, diff_beta)}};
  }

  // (rows, channels) row-major described as NHWC with the rows as one spatial axis: the same
  // bytes, but oneDNN 2.6 only has JIT batch normalization for 4-D/5-D data; a 2-D `ab` desc
  // falls to its plain-C ncsp loop, ~20x slower.
  static memory::desc BatchNormData(int64_t rows, int64_t channels) {
    return memory::desc({rows, channels, 1, 1}, dt::f32, tag::acdb);
  }
  // Training: batch statistics out; inference: the given (running) statistics in.
  dnnl::batch_normalization_forward::primitive_desc BatchNormFwdPd(const memory::desc& md,
                                                                   float eps, bool batch_stats) {
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    if (!batch_stats) flags |= dnnl::normalization_flags::use_global_stats;
    dnnl::batch_normalization_forward::desc fd(
        batch_stats ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, md,
        eps, flags);
    return dnnl::batch_normalization_forward::primitive_desc(fd, UserAttr(), engine_);
  }
  dnnl::layer_normalization_forward::primitive_desc LayerNormFwdPd(const memory::desc& md,
                                                                   const memory::desc& stat,
                                                                   float eps) {
    dnnl::layer_normalization_forward::desc fd(
        dnnl::prop_kind::forward_training, md, stat, eps,
        dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift);
    return dnnl::layer_normalization_forward::primitive_desc(fd, UserAttr(), engine_);
  }
  dnnl::softmax_v2_forward::primitive_desc SoftmaxFwdPd(const memory::desc& md, bool log) {
    dnnl::softmax_v2_forward::desc fd(
        dnnl::prop_kind::forward_training,
        log ? dnnl::algorithm::softmax_log : dnnl::algorithm::softmax_accurate, md, md, 1);
    return dnnl::softmax_v2_forward::primitive_desc(fd, UserAttr(), engine_);
  }
  static std::string PoolKey(const char* op, const PoolDesc& d) {
    return absl::StrCat(op, ":", d.n, ",", d.h, ",", d.w, ",", d.c, ",", d.kh, ",", d.kw, ",",
                        d.stride_h, ",", d.stride_w, ",", d.pad_top, ",", d.pad_left, ",",
                        d.pad_bottom, ",", d.pad_right, ",", d.max);
  }
  static dnnl::algorithm PoolAlgo(const PoolDesc& d) {
    return d.max ? dnnl::algorithm::pooling_max : dnnl::algorithm::pooling_avg_exclude_padding;
  }
  static memory::desc PoolSrcMd(const PoolDesc& d) {
    return memory::desc({d.n, d.c, d.h, d.w}, dt::f32, tag::nhwc);
  }
  static memory::desc PoolDstMd(const PoolDesc& d) {
    return memory::desc({d.n, d.c, d.out_h(), d.out_w()}, dt::f32, tag::nhwc);
  }
  dnnl::pooling_forward::primitive_desc PoolFwdPd(const PoolDesc& d) {
    dnnl::pooling_forward::desc fd(dnnl::prop_kind::forward_training, PoolAlgo(d), PoolSrcMd(d),
                                   PoolDstMd(d), {d.stride_h, d.stride_w}, {d.kh, d.kw},
                                   {d.pad_top, d.pad_left}, {d.pad_bottom, d.pad_right});
    return dnnl::pooling_forward::primitive_desc(fd, UserAttr(), engine_);
  }

  static std::string ConvKey(const ConvDesc& d) {
    return absl::StrCat(d.n, ",", d.h, ",", d.w, ",", d.c, ",", d.o, ",", d.kh, ",", d.kw, ",",
                        d.stride_h, ",", d.stride_w, ",", d.pad_top, ",", d.pad_left, ",",
                        d.pad_bottom, ",", d.pad_right, ",", d.groups, ",", d.dilation_h, ",",
                        d.dilation_w);
  }
  static memory::desc SrcMd(const ConvDesc& d, dt type) {
    return memory::desc({d.n, d.c, d.h, d.w}, type, tag::nhwc);
  }
  static memory::desc DstMd(const ConvDesc& d, dt type) {
    return memory::desc({d.n, d.o, d.out_h(), d.out_w()}, type, tag::nhwc);
  }
  // oneDNN's weights dims: (O, I, KH, KW), or (G, O/G, I/G, KH, KW) for a grouped convolution.
  static memory::dims WeightsDims(const ConvDesc& d) {
    if (d.groups == 1) return {d.o, d.c, d.kh, d.kw};
    return {d.groups, d.group_o(), d.group_c(), d.kh, d.kw};
  }
  // The user's HWIO weights; grouped, their O axis is (G, O/G), described by strides.
  static memory::desc UserWeightsMd(const ConvDesc& d, dt type) {
    if (d.groups == 1) return memory::desc(WeightsDims(d), type, tag::hwio);
    const int64_t row = d.group_c() * d.o;  // one (ky, kx) tap
    return memory::desc(WeightsDims(d), type, memory::dims{d.group_o(), 1, d.o, d.kw * row, row});
  }
  static memory::desc AnyWeightsMd(const ConvDesc& d, dt type) {
    return memory::desc(WeightsDims(d), type, tag::any);
  }
  static memory::dims Strides(const ConvDesc& d) { return {d.stride_h, d.stride_w}; }
  // oneDNN counts dilation from 0 (dense); ConvDesc from 1, as torch and Flax.
  static memory::dims Dilates(const ConvDesc& d) { return {d.dilation_h - 1, d.dilation_w - 1}; }
  static memory::dims PadL(const ConvDesc& d) { return {d.pad_top, d.pad_left}; }
  static memory::dims PadR(const ConvDesc& d) { return {d.pad_bottom, d.pad_right}; }

  dnnl::convolution_forward::primitive_desc ConvFwdPd(const ConvDesc& d, dt src_type, dt dst_type) {
    dnnl::convolution_forward::desc fd(
        dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, SrcMd(d, src_type),
        AnyWeightsMd(d, src_type), DstMd(d, dst_type), Strides(d), Dilates(d), PadL(d), PadR(d));
    return dnnl::convolution_forward::primitive_desc(fd, UserAttr(), engine_);
  }

  // Weights change every step: reorder between the user's HWIO layout and oneDNN's preferred one
  // on each call (cheap next to the convolution) when they differ.
  void SetWeightsReorder(CachedPrimitive& cp, const memory::desc& inner, const ConvDesc& d, dt type,
                         bool to_user) {
    cp.weights_md = inner;
    cp.user_weights_md = UserWeightsMd(d, type);
    cp.reorder_weights = inner != cp.user_weights_md;
    if (cp.reorder_weights) {
      cp.weights_reorder = to_user ? dnnl::reorder(dnnl::reorder::primitive_desc(
                                         engine_, inner, engine_, cp.user_weights_md))
                                   : dnnl::reorder(dnnl::reorder::primitive_desc(
                                         engine_, cp.user_weights_md, engine_, inner));
    }
  }

  memory WeightsIn(CachedPrimitive& p, const ConvDesc& d, dt type, const void* weights) {
    memory user = Mem(UserWeightsMd(d, type), weights);
    if (!p.reorder_weights) {
      return user;
    }
    memory inner(p.weights_md, engine_);
    p.weights_reorder.execute(stream_, user, inner);
    return inner;
  }

  static std::string ConvFwdKey(const ConvDesc& d, dt src_type) {
    return absl::StrCat("convf:", static_cast<int>(src_type), ":", ConvKey(d));
  }

  absl::StatusOr<CachedPrimitive*> GetConvFwd(const ConvDesc& d, dt src_type, dt dst_type) {
    return GetOrCreate(ConvFwdKey(d, src_type), [&] {
      auto pd = ConvFwdPd(d, src_type, dst_type);
      CachedPrimitive cp = Finish(dnnl::convolution_forward(pd), pd);
      SetWeightsReorder(cp, pd.weights_desc(), d, src_type, /*to_user=*/false);
      return cp;
    });
  }

  absl::Status ConvForward(const ConvDesc& d, dt src_type, dt dst_type, const void* src,
                           const void* weights, void* dst) {
    QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
    try {
      QTRAIN_ASSIGN_OR_RETURN(CachedPrimitive * p, GetConvFwd(d, src_type, dst_type));
      std::unordered_map<int, memory> args;
      args[DNNL_ARG_SRC] = Mem(SrcMd(d, src_type), src);
      args[DNNL_ARG_WEIGHTS] = WeightsIn(*p, d, src_type, weights);
      args[DNNL_ARG_DST] = Mem(DstMd(d, dst_type), dst);
      Execute(*p, args);
    } catch (const dnnl::error& e) {
      return DnnlError(e, "convolution forward");
    }
    return absl::OkStatus();
  }

  memory Mem(const memory::desc& md, const void* ptr) {
    return memory(md, engine_, const_cast<void*>(ptr));
  }

  void Execute(CachedPrimitive& p, std::unordered_map<int, memory>&& args) { Execute(p, args); }
  void Execute(CachedPrimitive& p, std::unordered_map<int, memory>& args) {
    const auto bytes = static_cast<int64_t>(p.scratchpad_bytes);
    // oneDNN's JIT kernels use aligned loads on the scratchpad: Tensor storage is 64-byte aligned.
    if (bytes > scratchpad_.numel()) {
      scratchpad_ = Tensor::Empty(DType::kU8, {bytes});
    }
    if (bytes > 0) {
      args[DNNL_ARG_SCRATCHPAD] =
          memory(memory::desc({bytes}, dt::u8, tag::a), engine_, scratchpad_.raw());
    }
    p.prim.execute(stream_, args);
    stream_.wait();
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::unordered_map<std::string, CachedPrimitive> cache_;
  std::unordered_map<std::string, RoutedOp> routes_;
  uint64_t generation_ = 0;  // TrimCache calls so far: the clock of last_used
  std::unique_ptr<Backend> reference_ = MakeReferenceBackend();  // below AVX2 only
  Tensor scratchpad_;  // grown on demand, shared by every primitive of this backend
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeOnednnBackend() {
  try {
    return std::unique_ptr<Backend>(std::make_unique<OnednnBackend>());
  } catch (const dnnl::error& e) {
    return DnnlError(e, "CPU engine");
  }
}

absl::StatusOr<std::string> Int8MatmulKernel(const Int8MatmulDesc& d, bool row_scale,
                                             bool col_scale) {
  try {
    OnednnBackend backend;
    QTRAIN_ASSIGN_OR_RETURN(const auto* r, backend.RouteInt8Matmul(d, row_scale, col_scale));
    return r->route.report.chosen;
  } catch (const dnnl::error& e) {
    return DnnlError(e, "CPU engine");
  }
}

absl::StatusOr<std::string> Int8ConvKernel(const ConvDesc& d) {
  QTRAIN_RETURN_IF_ERROR(ValidateConvDesc(d));
  try {
    OnednnBackend backend;
    QTRAIN_ASSIGN_OR_RETURN(const auto* r, backend.RouteInt8Conv(d));
    return r->route.report.chosen;
  } catch (const dnnl::error& e) {
    return DnnlError(e, "CPU engine");
  }
}

absl::StatusOr<std::vector<Int8KernelReport>> DescribeInt8Kernels() {
  try {
    OnednnBackend backend;
    std::vector<Int8KernelReport> out;
    Int8MatmulDesc mm;
    mm.mm = MatmulDesc{256, 1024, 1024};
    for (int variant = 0; variant < 3; ++variant) {
      Int8MatmulDesc d = mm;
      d.a_unsigned = variant == 1;
      d.mm.trans_b = variant == 2;
      QTRAIN_ASSIGN_OR_RETURN(const auto* r, backend.RouteInt8Matmul(d, true, true));
      out.push_back(r->route.report);
    }
    ConvDesc conv{32, 28, 28, 32, 64, 3, 3, 1, 1, 1, 1, 1, 1};
    ConvDesc depthwise{32, 28, 28, 96, 96, 3, 3, 1, 1, 1, 1, 1, 1};
    depthwise.groups = 96;  // MobileNetV2's 3x3 depthwise convolutions
    for (const ConvDesc& d : {conv, depthwise}) {
      QTRAIN_ASSIGN_OR_RETURN(const auto* r, backend.RouteInt8Conv(d));
      out.push_back(r->route.report);
    }
    return out;
  } catch (const dnnl::error& e) {
    return DnnlError(e, "CPU engine");
  }
}

}  // namespace qtrain
