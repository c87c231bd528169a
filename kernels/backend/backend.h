// Backend: the interface every compute device implements (after ggml's backend and oneDNN's
// implementation list): memory (allocation, host copies), descriptor-level ops over device
// addresses, the quantized ops, and the tensor-level ops the engine calls. The reference backend
// (plain loops) checks the others in the conformance tests; docs/architecture.md says how a GPU
// backend plugs in.
//
// A Backend instance is owned by one executor thread at a time (it holds streams, caches and
// scratch memory); it is not safe to call one instance from several threads at once. Raw pointers
// passed in are borrowed for the duration of the call. Errors: InvalidArgument for descriptors
// or tensors the backend rejects (naming the op and what it got), Internal for library failures.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/rng.h"
#include "kernels/row_ops.h"
#include "kernels/tensor.h"

namespace qtrain {

// The quantized ops' types (kernels/qdot.h, kernels/qconv.h, kernels/calibration.h).
struct QDotConfig;
struct QDotResiduals;
struct QDotForwardResult;
struct QDotGradients;
struct QConvConfig;
struct QConvResiduals;
struct QConvForwardResult;
struct Calibration;
struct CalibrationMethod;
struct ScaleLayout;
enum class QType : uint8_t;

// C(M,N) [+]= op(A)(M,K) · op(B)(K,N), row-major with leading dimensions. When trans_a, A is stored
// (K,M) with leading dim lda; when trans_b, B is stored (N,K) with leading dim ldb.
struct MatmulDesc {
  int64_t m = 0, k = 0, n = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;  // 0: dense (the stored row length)
  bool trans_a = false;
  bool trans_b = false;
  bool accumulate = false;  // C += result instead of C = result
};

// Integer matmul: C(M,N) [+]= float(A·B as int32) · row_scale[i] · col_scale[j].
// A is s8 or (a_unsigned) u8, B is s8. A is never transposed (oneDNN's VNNI kernel needs a dense
// src); B may be (trans_b). Scales may be null (= 1); they are host arrays (a few floats the
// quantized ops gather per call), A, B and C device memory.
struct Int8MatmulDesc {
  MatmulDesc mm;
  bool a_unsigned = false;
};

// 2-D convolution, NHWC activations, HWIO weights (Flax layout), no bias. With `groups` > 1 the
// input channels split into `groups` equal slices, each convolved with its own o / groups output
// channels (output channel j belongs to group j / (o / groups)); weights are then
// (kh, kw, c / groups, o), as Flax's feature_group_count (depthwise: groups == c). Dilation
// spaces the kernel taps (1: dense), as torch's dilation and Flax's kernel_dilation.
struct ConvDesc {
  int64_t n = 0, h = 0, w = 0, c = 0;  // src
  int64_t o = 0, kh = 0, kw = 0;       // weights (kh, kw, c / groups, o)
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  int64_t groups = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  int64_t group_c() const { return c / groups; }                // input channels of one group
  int64_t group_o() const { return o / groups; }                // output channels of one group
  int64_t span_h() const { return (kh - 1) * dilation_h + 1; }  // the dilated kernel's extent
  int64_t span_w() const { return (kw - 1) * dilation_w + 1; }
  int64_t out_h() const { return (h + pad_top + pad_bottom - span_h()) / stride_h + 1; }
  int64_t out_w() const { return (w + pad_left + pad_right - span_w()) / stride_w + 1; }
  int64_t weights_numel() const { return kh * kw * group_c() * o; }
};

enum class EltwiseKind : uint8_t {
  kRelu,
  kGeluTanh,  // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as flax.linen.gelu
  kSilu,      // x·sigmoid(x)
  kTanh,
  kRelu6,      // min(max(x, 0), 6); gradient 1 strictly inside (0, 6), as torch.nn.ReLU6
  kHardSwish,  // x·relu6(x + 3)/6, as torch.nn.Hardswish (gradient (2x + 3)/6 on [−3, 3])
  kSigmoid,    // 1/(1 + e^−x)
  kGeluErf,    // 0.5·x·(1 + erf(x/√2)): the exact form, torch.nn.GELU()'s default
};

enum class BinaryKind {
  kAdd,  // dst = a + b
  kMul,  // dst = a · b
};

// Rotary position embedding (RoPE) in Hugging Face's half-split layout over `rows` vectors of
// `dim` (even) values, row r at position r % positions: with h = dim / 2 and the angle table
// cos / sin (positions, h), y[i] = x[i]·cos − x[i+h]·sin and y[i+h] = x[i+h]·cos + x[i]·sin
// (q·cos + rotate_half(q)·sin). `inverse` applies the transposed rotation (sin negated): the
// backward of the forward.
struct RotaryDesc {
  int64_t rows = 0, positions = 0, dim = 0;
  bool inverse = false;
};

// Max / average pooling over NHWC windows. Average pooling divides by the number of in-bounds
// elements of each window (padding excluded).
struct PoolDesc {
  int64_t n = 0, h = 0, w = 0, c = 0;
  int64_t kh = 1, kw = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_top = 0, pad_left = 0, pad_bottom = 0, pad_right = 0;
  bool max = true;
  int64_t span_h() const { return kh; }  // as ConvDesc's: pooling windows are not dilated
  int64_t span_w() const { return kw; }
  int64_t out_h() const { return (h + pad_top + pad_bottom - kh) / stride_h + 1; }
  int64_t out_w() const { return (w + pad_left + pad_right - kw) / stride_w + 1; }
};

// A strided copy of float blocks: for every (i, j, k) < count, `block` contiguous floats from
// src + src_offset + i·src_stride[0] + j·src_stride[1] + k·src_stride[2] to the same place of dst
// under dst's offset and strides (heads split and merged, tokens prepended and taken, grouped
// key / value heads repeated). With `accumulate` dst += src; blocks landing on the same floats
// then sum. Strides are non-negative (0 broadcasts a block).
struct CopyDesc {
  std::array<int64_t, 3> count = {1, 1, 1};
  std::array<int64_t, 3> src_stride = {0, 0, 0};
  std::array<int64_t, 3> dst_stride = {0, 0, 0};
  int64_t block = 0;
  int64_t src_offset = 0, dst_offset = 0;
  bool accumulate = false;
};

// `batch` matrices of (rows, cols): ReduceRows sums each matrix's rows into one row,
// BroadcastRows repeats one row over them; both divide by `divisor` (bias gradients and adds,
// global average pooling) and with `accumulate` add to dst instead of overwriting it.
struct RowsDesc {
  int64_t batch = 1, rows = 0, cols = 0;
  float divisor = 1.0f;
  bool accumulate = false;
};

// Attention scores (batch·heads, t, t): the entries a query may not see — later keys when
// `causal`, padded keys always — are set to a value. The first `prefix` keys (tokens prepended
// after the flags were made: class tokens) are never padding; key j >= prefix is padded when
// padding (batch, t − prefix)[b, j − prefix] is non-zero.
struct AttentionMaskDesc {
  int64_t batch = 0, heads = 0, t = 0;
  bool causal = false;
  int64_t prefix = 0;
};

// Softmax cross-entropy over `rows` logit rows of `classes`: row i is scored against label
// targets[i] (shift_seq > 0: targets[i + 1] within sequences of shift_seq rows, their last row
// unscored — next-token prediction) unless that label's position is padding or the label is
// `ignore_index` (when has_ignore).
struct CrossEntropyDesc {
  int64_t rows = 0, classes = 0;
  int64_t shift_seq = 0;
  bool has_ignore = false;
  int32_t ignore_index = -100;
};
struct CrossEntropyResult {
  double loss_sum = 0;  // Σ −log p(label) over the scored rows
  int64_t count = 0;    // scored rows
  int64_t correct = 0;  // scored rows whose arg-max is the label
};

// One optimizer step's hyper-parameters (row_ops.h's AdamWArgs / SgdArgs without the arrays).
struct AdamWHyper {
  float clip = 1, lr = 0, wd = 0, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, c1 = 1, c2 = 1;
};
struct SgdHyper {
  float clip = 1, lr = 0, wd = 0, mu = 0;
  bool nesterov = false;
};
// What an update wrote (the largest |w|, |m| and v: the optimizer bounds the next step with
// them), or for a dry run (nothing written) whether every new value would be finite.
struct UpdateResult {
  bool finite = true;
  rowops::UpdateMax maxima;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const char* name() const = 0;

  // Called between steps, when no op is running: a backend that caches per-shape state (oneDNN
  // primitives) bounds it here, dropping what was used least recently.
  virtual void TrimCache() {}
  // Entries of that cache (primitives and int8 routes), for tests and diagnostics.
  virtual size_t CacheEntries() const { return 0; }
  // The implementation behind each cached primitive (cache key -> library's name, e.g.
  // "brgconv:avx512_core"), for reports of what runs each op; empty when nothing is cached.
  virtual std::map<std::string, std::string> CachedImplementations() const { return {}; }

  // Memory. The device this backend's tensors live on; host backends (the defaults below) use
  // host memory, so their copies are plain byte copies and Synchronize has nothing to wait for.
  // A device backend allocates its tensors (Tensor::OnDevice), moves bytes to and from host
  // tensors with the copies (ordered after every op queued before them) and waits for its queue
  // in Synchronize.
  virtual Device device() const { return Device(); }
  // Uninitialised storage on device(). ResourceExhausted when the device has no room.
  virtual absl::StatusOr<Tensor> Allocate(DType dtype, const Shape& shape);
  // `dst` (on device(), allocated) takes `src`'s bytes (a host tensor), and the reverse.
  // InvalidArgument naming both when dtypes or shapes differ, or a tensor is on the wrong device.
  virtual absl::Status CopyFromHost(const Tensor& src, Tensor& dst);
  virtual absl::Status CopyToHost(const Tensor& src, Tensor& dst);
  // Returns once every op and copy submitted so far has completed.
  virtual absl::Status Synchronize() { return absl::OkStatus(); }
  // The same values on device(): a host tensor itself (shared, not copied) when device() is the
  // host, else a new device tensor. InvalidArgument for a tensor on another device.
  absl::StatusOr<Tensor> ToDevice(const Tensor& host);
  // A new host tensor with t's values (t on device() or the host); ToHost passes a host tensor
  // through without copying.
  absl::StatusOr<Tensor> HostCopy(const Tensor& t);
  absl::StatusOr<Tensor> ToHost(Tensor t);

  // Quantized ops (numerics.md §3–6): calibration, quantization, the integer or float product
  // and its gradients as one op each, every tensor in and out (residuals and calibrations too) on
  // device(). The defaults compose kernels/qdot.cc, qconv.cc and calibration.cc over this
  // backend's matmuls and convolutions on host memory; a device backend overrides them.
  virtual absl::StatusOr<QDotForwardResult> QuantizedDotForward(const Tensor& x, const Tensor& w,
                                                                const QDotConfig& config);
  virtual absl::StatusOr<QDotGradients> QuantizedDotBackward(
      const Tensor& x, const Tensor& w, const Tensor& g, const QDotResiduals& residuals,
      const QDotConfig& config, const CounterRng* rng, uint64_t noise_counter);
  virtual absl::StatusOr<QConvForwardResult> QuantizedConvForward(const Tensor& x, const Tensor& w,
                                                                  const QConvConfig& config);
  virtual absl::StatusOr<QDotGradients> QuantizedConvBackward(const Tensor& g,
                                                              const QConvResiduals& residuals,
                                                              const QConvConfig& config);
  // The statistic `method` computes of x under `layout` (kernels/calibration.h's Calibrate).
  virtual absl::StatusOr<Calibration> CalibrateOperand(const Tensor& x, const ScaleLayout& layout,
                                                       const CalibrationMethod& method,
                                                       QType qtype);

  virtual absl::Status MatmulF32(const MatmulDesc& d, const float* a, const float* b, float* c) = 0;
  virtual absl::Status MatmulInt8(const Int8MatmulDesc& d, const void* a, const int8_t* b,
                                  const float* row_scale, const float* col_scale, float* c) = 0;

  // dst (n, oh, ow, o) = conv(src, weights), f32.
  virtual absl::Status ConvFwdF32(const ConvDesc& d, const float* src, const float* weights,
                                  float* dst) = 0;
  // dst (n, oh, ow, o) = conv(src, weights) accumulated in int32, s8 operands.
  virtual absl::Status ConvFwdInt8(const ConvDesc& d, const int8_t* src, const int8_t* weights,
                                   int32_t* dst) = 0;
  // diff_src (n, h, w, c) from diff_dst and weights.
  virtual absl::Status ConvBwdData(const ConvDesc& d, const float* diff_dst, const float* weights,
                                   float* diff_src) = 0;
  // diff_weights (kh, kw, c, o) from src and diff_dst.
  virtual absl::Status ConvBwdWeights(const ConvDesc& d, const float* src, const float* diff_dst,
                                      float* diff_weights) = 0;

  // dst[i] = f(src[i]) for n elements.
  virtual absl::Status EltwiseFwd(EltwiseKind kind, int64_t n, const float* src, float* dst) = 0;
  // diff_src[i] = f'(src[i]) · diff_dst[i].
  virtual absl::Status EltwiseBwd(EltwiseKind kind, int64_t n, const float* src,
                                  const float* diff_dst, float* diff_src) = 0;

  // Layer normalization over the last axis of a (rows, cols) matrix:
  // dst = (src - mean) / sqrt(var + eps) · gamma + beta; mean and var (rows) are saved for the
  // backward.
  virtual absl::Status LayerNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                                    const float* gamma, const float* beta, float* dst, float* mean,
                                    float* var) = 0;
  // diff_src, and diff_gamma / diff_beta (cols) from the forward's src, mean, var.
  virtual absl::Status LayerNormBwd(int64_t rows, int64_t cols, float eps, const float* src,
                                    const float* mean, const float* var, const float* gamma,
                                    const float* diff_dst, float* diff_src, float* diff_gamma,
                                    float* diff_beta) = 0;

  // Batch normalization of a (rows, channels) matrix — NHWC maps with rows = N·H·W — per channel:
  // dst = (src − mean) / sqrt(var + eps) · gamma + beta. With `batch_stats` (training), mean and
  // var (channels) are outputs: each channel's mean and biased variance over the rows; without,
  // they are inputs (the running statistics).
  virtual absl::Status BatchNormFwd(int64_t rows, int64_t channels, float eps, bool batch_stats,
                                    const float* src, const float* gamma, const float* beta,
                                    float* mean, float* var, float* dst) = 0;
  // The gradients of a batch_stats forward: diff_src, and diff_gamma / diff_beta (channels), from
  // its src, mean and var (the batch statistics depend on src, so their gradients are included).
  virtual absl::Status BatchNormBwd(int64_t rows, int64_t channels, float eps, const float* src,
                                    const float* mean, const float* var, const float* gamma,
                                    const float* diff_dst, float* diff_src, float* diff_gamma,
                                    float* diff_beta) = 0;

  // Softmax (or log-softmax) over the last axis of a (rows, cols) matrix.
  virtual absl::Status SoftmaxFwd(int64_t rows, int64_t cols, bool log, const float* src,
                                  float* dst) = 0;
  // diff_src from the forward's dst (softmax output) and diff_dst.
  virtual absl::Status SoftmaxBwd(int64_t rows, int64_t cols, const float* dst,
                                  const float* diff_dst, float* diff_src) = 0;

  // dst[i] = a[i] ∘ b[i] for n elements; dst may be a (in place), not b.
  virtual absl::Status Binary(BinaryKind kind, int64_t n, const float* a, const float* b,
                              float* dst) = 0;
  // dst (cols, rows) = src (rows, cols) transposed; dst must not alias src.
  virtual absl::Status Transpose(int64_t rows, int64_t cols, const float* src, float* dst) = 0;
  // dst (rows, dim) = the rotary embedding of src; InvalidArgument for an odd or empty dim, no
  // positions, or rows not a multiple of positions. dst must not alias src.
  virtual absl::Status Rotary(const RotaryDesc& d, const float* cos, const float* sin,
                              const float* src, float* dst) = 0;

  // dst (n, oh, ow, c) = pool(src).
  virtual absl::Status PoolFwd(const PoolDesc& d, const float* src, float* dst) = 0;
  // diff_src (n, h, w, c) from src (max pooling routes to the arg-max) and diff_dst.
  virtual absl::Status PoolBwd(const PoolDesc& d, const float* src, const float* diff_dst,
                               float* diff_src) = 0;

  // Data movement and the engine's small float ops (ValidateCopyDesc / ValidateRowsDesc first).
  virtual absl::Status Copy(const CopyDesc& d, const float* src, float* dst) = 0;
  // dst (batch, cols) [+]= Σ_rows src (batch, rows, cols) / divisor.
  virtual absl::Status ReduceRows(const RowsDesc& d, const float* src, float* dst) = 0;
  // dst (batch, rows, cols) [+]= src (batch, cols) / divisor.
  virtual absl::Status BroadcastRows(const RowsDesc& d, const float* src, float* dst) = 0;
  // y = alpha·x + beta·y for n elements; x null: y = beta·y.
  virtual absl::Status Axpby(int64_t n, float alpha, const float* x, float beta, float* y) = 0;
  virtual absl::Status Fill(int64_t n, float value, float* dst) = 0;
  // RMS normalization over the last axis of (rows, cols), as Llama's RMSNorm:
  // dst = src / sqrt(mean(src²) + eps) · gamma, with rstd (rows) = 1 / sqrt(mean(src²) + eps) kept
  // for the backward; the backward writes diff_src and diff_gamma (cols).
  virtual absl::Status RmsNormFwd(int64_t rows, int64_t cols, float eps, const float* src,
                                  const float* gamma, float* dst, float* rstd) = 0;
  virtual absl::Status RmsNormBwd(int64_t rows, int64_t cols, const float* src, const float* rstd,
                                  const float* gamma, const float* diff_dst, float* diff_src,
                                  float* diff_gamma) = 0;
  // Dropout's mask for n elements: 1 / (1 − rate) where (rng.Bits(base + i) >> 32) ≥ rate·2³²,
  // else 0 — a pure function of the generator and the counters, the same on every backend.
  virtual absl::Status DropoutMask(int64_t n, const CounterRng& rng, uint64_t base, float rate,
                                   float* mask) = 0;
  // dst (n, cols) = rows ids[i] of table (rows, cols); ScatterAdd is its transpose:
  // table[ids[i]] += src[i]. InvalidArgument naming the first id outside [0, rows) (nothing
  // written then).
  virtual absl::Status Gather(int64_t n, int64_t rows, int64_t cols, const float* table,
                              const int32_t* ids, float* dst) = 0;
  virtual absl::Status ScatterAdd(int64_t n, int64_t rows, int64_t cols, const int32_t* ids,
                                  const float* src, float* table) = 0;
  // Sets the masked scores (see AttentionMaskDesc) to `value`; padding may be null.
  virtual absl::Status AttentionMask(const AttentionMaskDesc& d, const uint8_t* padding,
                                     float value, float* scores) = 0;
  // Loss functions. The cross-entropy writes, when grad is not null, (softmax − one-hot) / count
  // on scored rows and 0 on the rest; the squared error returns Σ (y − t)² in double and writes
  // grad = 2 (y − t) / n.
  virtual absl::StatusOr<CrossEntropyResult> SoftmaxCrossEntropy(const CrossEntropyDesc& d,
                                                                 const float* logits,
                                                                 const int32_t* targets,
                                                                 const uint8_t* padding,
                                                                 float* grad) = 0;
  virtual absl::StatusOr<double> SquaredError(int64_t n, const float* y, const float* t,
                                              float* grad) = 0;
  // Input checks: InvalidArgument naming the first label outside [0, classes) (ignore_index
  // allowed when has_ignore) by value and position, or the first non-finite element.
  virtual absl::Status CheckLabels(int64_t n, int64_t classes, const int32_t* labels,
                                   bool has_ignore, int32_t ignore_index) = 0;
  virtual absl::Status CheckFinite(int64_t n, const float* x) = 0;
  // out[i] = x[i] == value (1 or 0; never for a value outside int32): token ids' padding flags.
  virtual absl::Status EqualTo(int64_t n, const int32_t* x, int64_t value, uint8_t* out) = 0;
  // Optimizer steps, element by element as row_ops.h's AdamWElement / SgdElement (the same bits
  // on every backend and ISA); with dry_run nothing is written.
  virtual absl::StatusOr<UpdateResult> AdamWUpdate(const rowops::AdamWArgs& a, bool dry_run) = 0;
  virtual absl::StatusOr<UpdateResult> SgdUpdate(const rowops::SgdArgs& a, bool dry_run) = 0;
  // Σ x² over the arrays, in double (the global gradient norm).
  virtual absl::StatusOr<double> SumOfSquares(
      absl::Span<const std::pair<const float*, int64_t>> arrays) = 0;

  // Tensor-level ops: what the engine calls (tensor_ops.cc). Each checks that its tensors are
  // on device(), of the dtype it computes in (f32; ids s32, padding u8) and of consistent sizes
  // — InvalidArgument naming the op and the shapes otherwise —, allocates its outputs with
  // Allocate and runs the op above. Outputs have the shape of the first input unless stated.
  absl::StatusOr<Tensor> Zeros(const Shape& shape);  // f32
  absl::StatusOr<Tensor> Clone(const Tensor& x);     // f32, a copy on device()
  absl::StatusOr<Tensor> Activation(EltwiseKind kind, const Tensor& x);
  absl::StatusOr<Tensor> ActivationGrad(EltwiseKind kind, const Tensor& x, const Tensor& dy);
  absl::StatusOr<Tensor> Add(const Tensor& a, const Tensor& b);
  absl::StatusOr<Tensor> Mul(const Tensor& a, const Tensor& b);
  absl::Status AddInto(Tensor& acc, const Tensor& b);  // acc += b
  absl::Status MulInto(Tensor& acc, const Tensor& b);  // acc ·= b
  absl::Status Scale(Tensor& t, float s);
  absl::Status Axpby(float alpha, const Tensor& x, float beta, Tensor& y);
  absl::Status Fill(Tensor& t, float value);
  // y (rows, n) += bias[0, n); grad[0, n) += the column sums of dy (rows, n).
  absl::Status AddBias(Tensor& y, const Tensor& bias, int64_t n);
  absl::Status AccumulateBiasGrad(const Tensor& dy, Tensor& grad, int64_t n);
  // x (batch, rows, cols) → (batch, cols), the mean over rows, and its backward: dy (batch, cols)
  // → (batch, rows, cols) spread evenly.
  absl::StatusOr<Tensor> MeanOverRows(const Tensor& x, int64_t batch, int64_t rows);
  absl::StatusOr<Tensor> MeanOverRowsGrad(const Tensor& dy, int64_t rows, Shape x_shape);
  // dst takes src's blocks (CopyDesc), every block inside both tensors.
  absl::Status CopyBlocks(const CopyDesc& d, const Tensor& src, Tensor& dst);
  // A (new) tensor of `shape` from CopyBlocks; with `zero`, the floats no block writes are 0.
  absl::StatusOr<Tensor> Gathered(const CopyDesc& d, const Tensor& src, Shape shape,
                                  bool zero = false);
  // (rows, cols) → (cols, rows) for a 2-D x; (n, rows, cols) → (n, cols, rows) for a 3-D one.
  absl::StatusOr<Tensor> Transposed(const Tensor& x);
  absl::StatusOr<Tensor> Softmax(const Tensor& x, bool log = false);  // over the last axis
  absl::StatusOr<Tensor> SoftmaxGrad(const Tensor& y, const Tensor& dy);
  absl::StatusOr<Tensor> Rotate(const Tensor& cos, const Tensor& sin, const Tensor& x, int64_t dim,
                                bool inverse);  // x (·, positions, ·), rows of dim
  absl::StatusOr<Tensor> Pool(const PoolDesc& d, const Tensor& x);
  absl::StatusOr<Tensor> PoolGrad(const PoolDesc& d, const Tensor& x, const Tensor& dy);
  // Normalizations over the last axis of x. `saved` receives what the backward needs.
  struct NormSaved {
    Tensor mean, var, rstd;
  };
  absl::StatusOr<Tensor> LayerNorm(float eps, const Tensor& x, const Tensor& gamma,
                                   const Tensor& beta, NormSaved& saved);
  absl::StatusOr<Tensor> RmsNorm(float eps, const Tensor& x, const Tensor& gamma, NormSaved& saved);
  // Batch normalization over all but the last axis: with batch statistics (saved.mean / var
  // written) or with `running` ones (saved is then the running mean and var, read).
  absl::StatusOr<Tensor> BatchNorm(float eps, bool batch_stats, const Tensor& x,
                                   const Tensor& gamma, const Tensor& beta, NormSaved& saved);
  // dx, with the parameters' gradients added to gamma_grad / beta_grad (beta_grad may be null).
  enum class NormKind { kLayer, kRms, kBatch };
  absl::StatusOr<Tensor> NormGrad(NormKind kind, float eps, const Tensor& x, const NormSaved& saved,
                                  const Tensor& gamma, const Tensor& dy, Tensor& gamma_grad,
                                  Tensor* beta_grad);
  // x times a dropout mask (DropoutMask), and the mask.
  absl::StatusOr<Tensor> Dropout(const Tensor& x, const CounterRng& rng, uint64_t base, float rate,
                                 Tensor& mask);
  // ids (any shape, s32) → (ids…, cols) rows of table (rows, cols), and the gradient's scatter.
  absl::StatusOr<Tensor> Embed(const Tensor& table, const Tensor& ids);
  absl::Status EmbedGrad(const Tensor& ids, const Tensor& dy, Tensor& table_grad);
  absl::Status MaskScores(const AttentionMaskDesc& d, const Tensor* padding, float value,
                          Tensor& scores);
  // Losses of logits / outputs against targets (CrossEntropyDesc's rows and classes from the
  // logits); grad, when not null, receives a new tensor of the logits' shape.
  absl::StatusOr<CrossEntropyResult> SoftmaxCrossEntropy(const CrossEntropyDesc& d,
                                                         const Tensor& logits,
                                                         const Tensor& targets,
                                                         const Tensor* padding, Tensor* grad);
  absl::StatusOr<double> SquaredError(const Tensor& y, const Tensor& t, Tensor* grad);
  absl::Status CheckLabels(const Tensor& labels, int64_t classes, bool has_ignore,
                           int32_t ignore_index);
  absl::Status CheckFinite(const Tensor& x);
  // u8 flags of the ids (s32) equal to value.
  absl::StatusOr<Tensor> EqualMask(const Tensor& ids, int64_t value);
  // One optimizer step of a parameter w with gradient g and its slots (same shapes; momentum
  // null: plain SGD).
  absl::StatusOr<UpdateResult> AdamW(const AdamWHyper& h, Tensor& w, Tensor& m, Tensor& v,
                                     const Tensor& g, bool dry_run);
  absl::StatusOr<UpdateResult> Sgd(const SgdHyper& h, Tensor& w, Tensor* momentum, const Tensor& g,
                                   bool dry_run);
  absl::StatusOr<double> SumOfSquares(const std::vector<const Tensor*>& tensors);
};

// Plain-loop implementation: slow, obviously correct, the yardstick of every other backend.
std::unique_ptr<Backend> MakeReferenceBackend();

// oneDNN CPU implementation (int8 VNNI / AVX-512 kernels). Internal if oneDNN cannot create a
// CPU engine.
absl::StatusOr<std::unique_ptr<Backend>> MakeOnednnBackend();

// Validates dims of a matmul / conv descriptor (positive sizes, leading dims large enough,
// convolution output non-empty). InvalidArgument naming the field otherwise.
absl::Status ValidateMatmulDesc(const MatmulDesc& d);
absl::Status ValidateConvDesc(const ConvDesc& d);
absl::Status ValidatePoolDesc(const PoolDesc& d);
absl::Status ValidateRotaryDesc(const RotaryDesc& d);
// Non-negative counts, strides and offsets; the extent each side reaches (one past its last
// float) in *src_end / *dst_end.
absl::Status ValidateCopyDesc(const CopyDesc& d, int64_t* src_end, int64_t* dst_end);
absl::Status ValidateRowsDesc(const RowsDesc& d);
absl::Status ValidateAttentionMaskDesc(const AttentionMaskDesc& d);
// Host backends' check of Gather / ScatterAdd ids: the first id outside [0, rows), by position.
absl::Status ValidateIds(int64_t n, int64_t rows, const int32_t* ids);
// The checks every backend's host copies make: same dtype and shape ("<what>: src f32[5] and dst
// f32[4] differ"), each side on its device ("<what>: src is on cuda:1 and dst on cpu:0; expected
// ..."). InvalidArgument.
absl::Status ValidateCopy(const char* what, const Tensor& src, const Device& src_device,
                          const Tensor& dst, const Device& dst_device);
// ValidateMatmulDesc plus: the int8 src is never transposed.
absl::Status ValidateInt8MatmulDesc(const Int8MatmulDesc& d);

// Effective leading dimensions (the `0 = dense` convention resolved).
int64_t Lda(const MatmulDesc& d);
int64_t Ldb(const MatmulDesc& d);
int64_t Ldc(const MatmulDesc& d);

}  // namespace qtrain
