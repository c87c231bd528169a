#include "kernels/backend/guarded_backend.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/calibration.h"
#include "kernels/qconv.h"
#include "kernels/qdot.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"

namespace qtrain {
namespace {

constexpr Device kGuarded{DeviceKind::kGuarded, 0};

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "guarded backend: %s\n", message.c_str());
  std::abort();
}

// The backend's mappings, each PROT_NONE unless an op holds it open; shared with its tensors'
// deleters, which may run on any thread and after the backend is gone.
class GuardedMemory {
 public:
  // `bytes` (at least one page), inaccessible.
  void* Map(size_t bytes, size_t* length) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    *length = std::max<size_t>(page, (bytes + page - 1) / page * page);
    void* p = mmap(nullptr, *length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return nullptr;
    MutexLock lock(&mu_);
    regions_[reinterpret_cast<uintptr_t>(p)] = Region{*length, 0};
    return p;
  }
  void Unmap(void* p, size_t length) {
    {
      MutexLock lock(&mu_);
      regions_.erase(reinterpret_cast<uintptr_t>(p));
    }
    munmap(p, length);
  }
  // Makes the mappings holding `pointers` (nulls skipped) readable and writable until Close;
  // opens nest (a region two operands share, a tensor adopted inside an op). Aborts naming `op`
  // when a pointer is not inside one of them: a host pointer reached the backend.
  std::vector<uintptr_t> Open(const char* op, absl::Span<const void* const> pointers) {
    std::vector<uintptr_t> bases;
    MutexLock lock(&mu_);
    for (const void* p : pointers) {
      if (p == nullptr) continue;
      const auto a = reinterpret_cast<uintptr_t>(p);
      auto it = regions_.upper_bound(a);
      if (it == regions_.begin() || a >= std::prev(it)->first + std::prev(it)->second.length) {
        Die(absl::StrCat(op,
                         ": an operand is not guarded:0 memory (a host tensor reached the "
                         "backend without ToDevice)"));
      }
      --it;
      if (it->second.opens++ == 0) Protect(it->first, it->second.length, PROT_READ | PROT_WRITE);
      bases.push_back(it->first);
    }
    return bases;
  }
  void Close(const std::vector<uintptr_t>& bases) {
    MutexLock lock(&mu_);
    for (uintptr_t base : bases) {
      auto it = regions_.find(base);
      if (it != regions_.end() && --it->second.opens == 0) {
        Protect(it->first, it->second.length, PROT_NONE);
      }
    }
  }
  bool Owns(const void* p) {
    const auto a = reinterpret_cast<uintptr_t>(p);
    MutexLock lock(&mu_);
    auto it = regions_.upper_bound(a);
    return it != regions_.begin() && a < std::prev(it)->first + std::prev(it)->second.length;
  }

 private:
  struct Region {
    size_t length;
    int opens;
  };
  static void Protect(uintptr_t base, size_t length, int prot) {
    if (mprotect(reinterpret_cast<void*>(base), length, prot) != 0) Die("mprotect failed");
  }

  Mutex mu_;
  std::map<uintptr_t, Region> regions_ ABSL_GUARDED_BY(mu_);
};

// The regions of an op's operands, open for the op's duration.
class Window {
 public:
  Window(GuardedMemory& m, const char* op, absl::Span<const void* const> pointers)
      : m_(m), bases_(m.Open(op, pointers)) {}
  ~Window() { m_.Close(bases_); }
  Window(const Window&) = delete;
  Window& operator=(const Window&) = delete;

 private:
  GuardedMemory& m_;
  std::vector<uintptr_t> bases_;
};

class GuardedBackend final : public Backend {
 public:
  GuardedBackend() : ref_(MakeReferenceBackend()), mem_(std::make_shared<GuardedMemory>()) {}

 private:
  // f() with the regions of `pointers` open (each one of this backend's, else an abort).
  template <typename F, typename... P>
  auto Run(const char* op, F f, P... pointers) {
    const void* const list[] = {static_cast<const void*>(pointers)...};
    Window w(*mem_, op, list);
    return f();
  }

 public:
  const char* name() const override { return "guarded"; }
  Device device() const override { return kGuarded; }
  void TrimCache() override { ref_->TrimCache(); }

  absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape) override {
    const int64_t n = NumElements(shape);
    if (n < 0 || n > (int64_t{1} << 40) / static_cast<int64_t>(DTypeSize(dtype))) {
      return absl::ResourceExhaustedError(
          absl::StrCat("allocating ", DTypeName(dtype), ShapeString(shape), " on guarded:0"));
    }
    size_t length = 0;
    void* p = mem_->Map(static_cast<size_t>(n) * DTypeSize(dtype), &length);
    if (p == nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("allocating ", DTypeName(dtype), ShapeString(shape), " on guarded:0"));
    }
    std::shared_ptr<GuardedMemory> mem = mem_;
    std::shared_ptr<std::byte> storage(static_cast<std::byte*>(p),
                                       [mem, length](std::byte* b) { mem->Unmap(b, length); });
    return Tensor::OnDevice(dtype, shape, kGuarded, std::move(storage));
  }

  absl::Status CopyFromHost(const Tensor& src, Tensor& dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateCopy("CopyFromHost", src, Device(), dst, kGuarded));
    const void* const open[] = {dst.raw()};
    Window w(*mem_, "CopyFromHost", open);
    if (src.nbytes() > 0) std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return absl::OkStatus();
  }
  absl::Status CopyToHost(const Tensor& src, Tensor& dst) override {
    QTRAIN_RETURN_IF_ERROR(ValidateCopy("CopyToHost", src, kGuarded, dst, Device()));
    const void* const open[] = {src.raw()};
    Window w(*mem_, "CopyToHost", open);
    if (src.nbytes() > 0) std::memcpy(dst.raw(), src.raw(), src.nbytes());
    return absl::OkStatus();
  }

  // Descriptor-level ops: every pointer one of this backend's, then the reference's loops.
  absl::Status MatmulF32(const MatmulDesc& d, const float* a, const float* b, float* c) override {
    return Run(
        "MatmulF32", [&] { return ref_->MatmulF32(d, a, b, c); }, a, b, c);
  }
  absl::Status MatmulInt8(const Int8MatmulDesc& d, const void* a, const int8_t* b,
                          const float* row_scale, const float* col_scale, float* c) override {
    // The per-row / per-column scales are small host vectors the quantized ops gather.
    return Run(
        "MatmulInt8", [&] { return ref_->MatmulInt8(d, a, b, row_scale, col_scale, c); }, a, b, c);
  }
  absl::Status ConvFwdF32(const ConvDesc& d, const float* src, const float* weights,
                          float* dst) override {
    return Run(
        "ConvFwdF32", [&] { return ref_->ConvFwdF32(d, src, weights, dst); }, src, weights, dst);
  }
  absl::Status ConvFwdInt8(const ConvDesc& d, const int8_t* src, const int8_t* weights,
                           int32_t* dst) override {
    return Run(
        "ConvFwdInt8", [&] { return ref_->ConvFwdInt8(d, src, weights, dst); }, src, weights, dst);
  }
  absl::Status ConvBwdData(const ConvDesc& d, const float* diff_dst, const float* weights,
                           float* diff_src) override {
    return Run(
        "ConvBwdData", [&] { return ref_->ConvBwdData(d, diff_dst, weights, diff_src); }, diff_dst,
        weights, diff_src);
  }
  absl::Status ConvBwdWeights(const ConvDesc& d, const float* src, const float* diff_dst,
                              float* diff_weights) override {
    return Run(
        "ConvBwdWeights", [&] { return ref_->ConvBwdWeights(d, src, diff_dst, diff_weights); }, src,
        diff_dst, diff_weights);
  }
  absl::Status EltwiseFwd(EltwiseKind kind, int64_t n, const float* src, float* dst) override {
    return Run(
        "EltwiseFwd", [&] { return ref_->EltwiseFwd(kind, n, src, dst); }, src, dst);
  }
  absl::Status EltwiseBwd(EltwiseKind kind, int64_t n, const float* src, const float* diff_dst,
                          float* diff_src) override {
    return Run(
        "EltwiseBwd", [&] { return ref_->EltwiseBwd(kind, n, src, diff_dst, diff_src); }, src,
        diff_dst, diff_src);
  }
  absl::Status LayerNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                            const float* gamma, const float* beta, float* dst, float* mean,
                            float* var) override {
    return Run(
        "LayerNormFwd",
        [&] { return ref_->LayerNormFwd(rows, cols, eps, src, gamma, beta, dst, mean, var); }, src,
        gamma, beta, dst, mean, var);
  }
  absl::Status LayerNormBwd(int64_t rows, int64_t cols, float eps, const float* src,
                            const float* mean, const float* var, const float* gamma,
                            const float* diff_dst, float* diff_src, float* diff_gamma,
                            float* diff_beta) override {
    return Run(
        "LayerNormBwd",
        [&] {
          return ref_->LayerNormBwd(rows, cols, eps, src, mean, var, gamma, diff_dst, diff_src,
                                    diff_gamma, diff_beta);
        },
        src, mean, var, gamma, diff_dst, diff_src, diff_gamma, diff_beta);
  }
  absl::Status BatchNormFwd(int64_t rows, int64_t channels, float eps, bool batch_stats,
                            const float* src, const float* gamma, const float* beta, float* mean,
                            float* var, float* dst) override {
    return Run(
        "BatchNormFwd",
        [&] {
          return ref_->BatchNormFwd(rows, channels, eps, batch_stats, src, gamma, beta, mean, var,
                                    dst);
        },
        src, gamma, beta, mean, var, dst);
  }
  absl::Status BatchNormBwd(int64_t rows, int64_t channels, float eps, const float* src,
                            const float* mean, const float* var, const float* gamma,
                            const float* diff_dst, float* diff_src, float* diff_gamma,
                            float* diff_beta) override {
    return Run(
        "BatchNormBwd",
        [&] {
          return ref_->BatchNormBwd(rows, channels, eps, src, mean, var, gamma, diff_dst, diff_src,
                                    diff_gamma, diff_beta);
        },
        src, mean, var, gamma, diff_dst, diff_src, diff_gamma, diff_beta);
  }
  absl::Status SoftmaxFwd(int64_t rows, int64_t cols, bool log, const float* src,
                          float* dst) override {
    return Run(
        "SoftmaxFwd", [&] { return ref_->SoftmaxFwd(rows, cols, log, src, dst); }, src, dst);
  }
  absl::Status SoftmaxBwd(int64_t rows, int64_t cols, const float* dst, const float* diff_dst,
                          float* diff_src) override {
    return Run(
        "SoftmaxBwd", [&] { return ref_->SoftmaxBwd(rows, cols, dst, diff_dst, diff_src); }, dst,
        diff_dst, diff_src);
  }
  absl::Status Binary(BinaryKind kind, int64_t n, const float* a, const float* b,
                      float* dst) override {
    return Run(
        "Binary", [&] { return ref_->Binary(kind, n, a, b, dst); }, a, b, dst);
  }
  absl::Status Transpose(int64_t rows, int64_t cols, const float* src, float* dst) override {
    return Run(
        "Transpose", [&] { return ref_->Transpose(rows, cols, src, dst); }, src, dst);
  }
  absl::Status Rotary(const RotaryDesc& d, const float* cos, const float* sin, const float* src,
                      float* dst) override {
    return Run(
        "Rotary", [&] { return ref_->Rotary(d, cos, sin, src, dst); }, cos, sin, src, dst);
  }
  absl::Status PoolFwd(const PoolDesc& d, const float* src, float* dst) override {
    return Run(
        "PoolFwd", [&] { return ref_->PoolFwd(d, src, dst); }, src, dst);
  }
  absl::Status PoolBwd(const PoolDesc& d, const float* src, const float* diff_dst,
                       float* diff_src) override {
    return Run(
        "PoolBwd", [&] { return ref_->PoolBwd(d, src, diff_dst, diff_src); }, src, diff_dst,
        diff_src);
  }
  absl::Status Copy(const CopyDesc& d, const float* src, float* dst) override {
    return Run(
        "Copy", [&] { return ref_->Copy(d, src, dst); }, src, dst);
  }
  absl::Status ReduceRows(const RowsDesc& d, const float* src, float* dst) override {
    return Run(
        "ReduceRows", [&] { return ref_->ReduceRows(d, src, dst); }, src, dst);
  }
  absl::Status BroadcastRows(const RowsDesc& d, const float* src, float* dst) override {
    return Run(
        "BroadcastRows", [&] { return ref_->BroadcastRows(d, src, dst); }, src, dst);
  }
  absl::Status Axpby(int64_t n, float alpha, const float* x, float beta, float* y) override {
    return Run(
        "Axpby", [&] { return ref_->Axpby(n, alpha, x, beta, y); }, x, y);
  }
  absl::Status Fill(int64_t n, float value, float* dst) override {
    return Run(
        "Fill", [&] { return ref_->Fill(n, value, dst); }, dst);
  }
  absl::Status RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                          const float* gamma, float* dst, float* rstd) override {
    return Run(
        "RmsNormFwd", [&] { return ref_->RmsNormFwd(rows, cols, eps, src, gamma, dst, rstd); }, src,
        gamma, dst, rstd);
  }
  absl::Status RmsNormBwd(int64_t rows, int64_t cols, const float* src, const float* rstd,
                          const float* gamma, const float* diff_dst, float* diff_src,
                          float* diff_gamma) override {
    return Run(
        "RmsNormBwd",
        [&] {
          return ref_->RmsNormBwd(rows, cols, src, rstd, gamma, diff_dst, diff_src, diff_gamma);
        },
        src, rstd, gamma, diff_dst, diff_src, diff_gamma);
  }
  absl::Status DropoutMask(int64_t n, const CounterRng& rng, uint64_t base, float rate,
                           float* mask) override {
    return Run(
        "DropoutMask", [&] { return ref_->DropoutMask(n, rng, base, rate, mask); }, mask);
  }
  absl::Status Gather(int64_t n, int64_t rows, int64_t cols, const float* table, const int32_t* ids,
                      float* dst) override {
    return Run(
        "Gather", [&] { return ref_->Gather(n, rows, cols, table, ids, dst); }, table, ids, dst);
  }
  absl::Status ScatterAdd(int64_t n, int64_t rows, int64_t cols, const int32_t* ids,
                          const float* src, float* table) override {
    return Run(
        "ScatterAdd", [&] { return ref_->ScatterAdd(n, rows, cols, ids, src, table); }, ids, src,
        table);
  }
  absl::Status AttentionMask(const AttentionMaskDesc& d, const uint8_t* padding, float value,
                             float* scores) override {
    return Run(
        "AttentionMask", [&] { return ref_->AttentionMask(d, padding, value, scores); }, padding,
        scores);
  }
  absl::StatusOr<CrossEntropyResult> SoftmaxCrossEntropy(const CrossEntropyDesc& d,
                                                         const float* logits,
                                                         const int32_t* targets,
                                                         const uint8_t* padding,
                                                         float* grad) override {
    return Run(
        "SoftmaxCrossEntropy",
        [&] { return ref_->SoftmaxCrossEntropy(d, logits, targets, padding, grad); }, logits,
        targets, padding, grad);
  }
  absl::StatusOr<double> SquaredError(int64_t n, const float* y, const float* t,
                                      float* grad) override {
    return Run(
        "SquaredError", [&] { return ref_->SquaredError(n, y, t, grad); }, y, t, grad);
  }
  absl::Status CheckLabels(int64_t n, int64_t classes, const int32_t* labels, bool has_ignore,
                           int32_t ignore_index) override {
    return Run(
        "CheckLabels",
        [&] { return ref_->CheckLabels(n, classes, labels, has_ignore, ignore_index); }, labels);
  }
  absl::Status CheckFinite(int64_t n, const float* x) override {
    return Run(
        "CheckFinite", [&] { return ref_->CheckFinite(n, x); }, x);
  }
  absl::Status EqualTo(int64_t n, const int32_t* x, int64_t value, uint8_t* out) override {
    return Run(
        "EqualTo", [&] { return ref_->EqualTo(n, x, value, out); }, x, out);
  }
  absl::StatusOr<UpdateResult> AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run) override {
    return Run(
        "AdamWUpdate", [&] { return ref_->AdamWUpdate(a, dry_run); }, a.w, a.m, a.v, a.g);
  }
  absl::StatusOr<UpdateResult> SgdUpdate(const rowops::SgdArgs& a, bool dry_run) override {
    return Run(
        "SgdUpdate", [&] { return ref_->SgdUpdate(a, dry_run); }, a.w, a.m, a.g);
  }
  absl::StatusOr<double> SumOfSquares(
      absl::Span<const std::pair<const float*, int64_t>> arrays) override {
    std::vector<const void*> open;
    for (const auto& [p, n] : arrays) open.push_back(p);
    Window w(*mem_, "SumOfSquares", open);
    return ref_->SumOfSquares(arrays);
  }

  // Quantized ops: host views of the operands for kernels/qdot.cc and qconv.cc over the
  // reference backend, their outputs moved into guarded memory.
  absl::StatusOr<QDotForwardResult> QuantizedDotForward(const Tensor& x, const Tensor& w,
                                                        const QDotConfig& config) override {
    Operands in("QuantizedDotForward");
    QDotConfig c = config;
    std::optional<Calibration> lhs, rhs;
    ViewStatic(config.lhs, lhs, c.lhs, in);
    ViewStatic(config.rhs, rhs, c.rhs, in);
    const Tensor xv = View(x, in), wv = View(w, in);
    Window win(*mem_, in.op, in.pointers);
    QTRAIN_ASSIGN_OR_RETURN(QDotForwardResult r, QDotForward(*ref_, xv, wv, c));
    Adopt(r.y);
    Adopt(r.residuals);
    Adopt(r.x_dynamic_calibration);
    Adopt(r.w_dynamic_calibration);
    return r;
  }
  absl::StatusOr<QDotGradients> QuantizedDotBackward(
      const Tensor& x, const Tensor& w, const Tensor& g, const QDotResiduals& residuals,
      const QDotConfig& config, const CounterRng* rng, uint64_t noise_counter) override {
    Operands in("QuantizedDotBackward");
    QDotResiduals r;
    r.xq = View(residuals.xq, in);
    r.wq = View(residuals.wq, in);
    r.x_clip = View(residuals.x_clip, in);
    r.w_clip = View(residuals.w_clip, in);
    r.scale_shifting = residuals.scale_shifting;
    const Tensor xv = View(x, in), wv = View(w, in), gv = View(g, in);
    Window win(*mem_, in.op, in.pointers);
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients grads,
                            QDotBackward(*ref_, xv, wv, gv, r, config, rng, noise_counter));
    Adopt(grads);
    return grads;
  }
  absl::StatusOr<QConvForwardResult> QuantizedConvForward(const Tensor& x, const Tensor& w,
                                                          const QConvConfig& config) override {
    Operands in("QuantizedConvForward");
    QConvConfig c = config;
    std::optional<Calibration> lhs, rhs;
    ViewStatic(config.lhs, lhs, c.lhs, in);
    ViewStatic(config.rhs, rhs, c.rhs, in);
    const Tensor xv = View(x, in), wv = View(w, in);
    Window win(*mem_, in.op, in.pointers);
    QTRAIN_ASSIGN_OR_RETURN(QConvForwardResult r, QConvForward(*ref_, xv, wv, c));
    Adopt(r.y);
    Adopt(r.residuals.x_used);
    Adopt(r.residuals.w_used);
    Adopt(r.x_dynamic_calibration);
    return r;
  }
  absl::StatusOr<QDotGradients> QuantizedConvBackward(const Tensor& g,
                                                      const QConvResiduals& residuals,
                                                      const QConvConfig& config) override {
    Operands in("QuantizedConvBackward");
    QConvResiduals r{View(residuals.x_used, in), View(residuals.w_used, in)};
    const Tensor gv = View(g, in);
    Window win(*mem_, in.op, in.pointers);
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients grads, QConvBackward(*ref_, gv, r, config));
    Adopt(grads);
    return grads;
  }
  absl::StatusOr<Calibration> CalibrateOperand(const Tensor& x, const ScaleLayout& layout,
                                               const CalibrationMethod& method,
                                               QType qtype) override {
    Operands in("CalibrateOperand");
    const Tensor xv = View(x, in);
    Window win(*mem_, in.op, in.pointers);
    QTRAIN_ASSIGN_OR_RETURN(Calibration cal, ref_->CalibrateOperand(xv, layout, method, qtype));
    Adopt(cal);
    return cal;
  }

 private:
  // The operands of a quantized op, gathered while they are viewed on the host.
  struct Operands {
    explicit Operands(const char* op) : op(op) {}
    const char* op;
    std::vector<const void*> pointers;  // the storage each view reads
  };
  // A host view of one of this backend's tensors (an empty one stays empty).
  static Tensor View(const Tensor& t, Operands& in) {
    if (t.empty()) return Tensor();
    if (t.device() != kGuarded) {
      Die(absl::StrCat(in.op, ": an operand is on ", t.device().Name(), ", not guarded:0"));
    }
    in.pointers.push_back(t.raw());
    return t.ViewAs(Device());
  }
  static Calibration View(const Calibration& c, Operands& in) {
    Calibration v;
    v.symmetric = c.symmetric;
    v.absmax = View(c.absmax, in);
    v.lo = View(c.lo, in);
    v.hi = View(c.hi, in);
    return v;
  }
  static std::optional<Calibration> View(const std::optional<Calibration>& c, Operands& in) {
    if (!c) return std::nullopt;
    return View(*c, in);
  }
  static std::optional<QuantizedTensor> View(const std::optional<QuantizedTensor>& q,
                                             Operands& in) {
    if (!q) return std::nullopt;
    QuantizedTensor v;
    v.qtype = q->qtype;
    v.q = View(q->q, in);
    v.params.scale = View(q->params.scale, in);
    v.params.zero_point = View(q->params.zero_point, in);
    v.layout = q->layout;
    return v;
  }
  // A static (SRQ) calibration of an operand, viewed on the host for the call.
  template <typename Operand>
  static void ViewStatic(const Operand& op, std::optional<Calibration>& storage, Operand& out,
                         Operands& in) {
    if (op.static_calibration == nullptr) return;
    storage = View(*op.static_calibration, in);
    out.static_calibration = &*storage;
  }

  // Moves a result into guarded memory: a view of guarded memory (an operand passed through)
  // takes the device back, a host tensor the kernels made is copied into a new mapping.
  void Adopt(Tensor& t) {
    if (t.empty()) return;
    if (mem_->Owns(t.raw())) {
      t = t.ViewAs(kGuarded);
      return;
    }
    absl::StatusOr<Tensor> d = Allocate(t.dtype(), t.shape());
    if (!d.ok()) Die(std::string(d.status().message()));
    {
      const void* const open[] = {d->raw()};
      Window w(*mem_, "adopting a result", open);
      if (t.nbytes() > 0) std::memcpy(d->raw(), t.raw(), t.nbytes());
    }
    t = *std::move(d);
  }
  void Adopt(Calibration& c) {
    Adopt(c.absmax);
    Adopt(c.lo);
    Adopt(c.hi);
  }
  void Adopt(std::optional<Calibration>& c) {
    if (c) Adopt(*c);
  }
  void Adopt(std::optional<QuantizedTensor>& q) {
    if (!q) return;
    Adopt(q->q);
    Adopt(q->params.scale);
    Adopt(q->params.zero_point);
  }
  void Adopt(QDotResiduals& r) {
    Adopt(r.xq);
    Adopt(r.wq);
    Adopt(r.x_clip);
    Adopt(r.w_clip);
  }
  void Adopt(QDotGradients& g) {
    Adopt(g.dx);
    Adopt(g.dw);
  }

  std::unique_ptr<Backend> ref_;
  std::shared_ptr<GuardedMemory> mem_;
};

}  // namespace

std::unique_ptr<Backend> MakeGuardedBackend() { return std::make_unique<GuardedBackend>(); }

}  // namespace qtrain
