// Quantized dot benchmarks (issue: foundation). Every case runs at 1 and 2 OpenMP threads
// (the last argument) so ratios compare like with like; bench_report.py divides each row by
// the f32 matmul of the same shape and thread count measured in the same run.
#include <benchmark/benchmark.h>
#include <omp.h>

#include <cstring>
#include <random>

#include "kernels/backend/backend.h"
#include "kernels/qdot.h"

namespace qtrain {
namespace {

Tensor Random(const Shape& shape, uint32_t seed, float stddev) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, stddev);
  Tensor t = Tensor::Empty(DType::kF32, shape);
  for (float& v : t.span<float>()) {
    v = dist(gen);
  }
  return t;
}

Backend& OnednnBackend() {
  static std::unique_ptr<Backend> backend = *MakeOnednnBackend();
  return *backend;
}

struct Problem {
  int64_t m, k, n;
  Tensor x, w, g;
  explicit Problem(const benchmark::State& state)
      : m(state.range(0)), k(state.range(1)), n(state.range(2)) {
    omp_set_num_threads(static_cast<int>(state.range(3)));
    x = Random({m, k}, 1, 1.0f);
    w = Random({k, n}, 2, 0.05f);
    g = Random({m, n}, 3, 0.01f);
  }
};

QDotConfig Int8(QDotImpl impl) {
  QDotConfig c;
  c.lhs.qtype = QType::kInt8;
  c.rhs.qtype = QType::kInt8;
  c.bwd_qtype = QType::kInt8;
  c.impl = impl;
  return c;
}

void SetFlops(benchmark::State& state, const Problem& p, double dots) {
  state.counters["GOPS"] =
      benchmark::Counter(2.0 * p.m * p.k * p.n * dots * state.iterations(),
                         benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

void BM_MatmulF32(benchmark::State& state) {
  Problem p(state);
  Tensor y = Tensor::Empty(DType::kF32, {p.m, p.n});
  for (auto _ : state) {
    auto s = OnednnBackend().MatmulF32(MatmulDesc{p.m, p.k, p.n}, p.x.data<float>(),
                                       p.w.data<float>(), y.data<float>());
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
    }
  }
  SetFlops(state, p, 1);
}

void BM_MatmulInt8Kernel(benchmark::State& state) {
  Problem p(state);
  Tensor xq = Tensor::Zeros(DType::kS8, {p.m, p.k}), wq = Tensor::Zeros(DType::kS8, {p.k, p.n});
  Tensor rs = Random({p.m}, 4, 1), cs = Random({p.n}, 5, 1);
  Tensor y = Tensor::Empty(DType::kF32, {p.m, p.n});
  Int8MatmulDesc d;
  d.mm = MatmulDesc{p.m, p.k, p.n};
  for (auto _ : state) {
    auto s = OnednnBackend().MatmulInt8(d, xq.raw(), wq.data<int8_t>(), rs.data<float>(),
                                        cs.data<float>(), y.data<float>());
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
    }
  }
  SetFlops(state, p, 1);
}

void RunForward(benchmark::State& state, QDotImpl impl) {
  Problem p(state);
  const QDotConfig c = Int8(impl);
  for (auto _ : state) {
    auto r = QDotForward(OnednnBackend(), p.x, p.w, c);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
    }
    benchmark::DoNotOptimize(r);
  }
  SetFlops(state, p, 1);
}
void BM_QatForwardInt8(benchmark::State& state) { RunForward(state, QDotImpl::kInteger); }
void BM_QatForwardFakeQuant(benchmark::State& state) { RunForward(state, QDotImpl::kFakeQuant); }

void RunBackward(benchmark::State& state, const QDotConfig& c) {
  Problem p(state);
  auto fwd = *QDotForward(OnednnBackend(), p.x, p.w, c);
  for (auto _ : state) {
    auto r = QDotBackward(OnednnBackend(), p.x, p.w, p.g, fwd.residuals, c);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
    }
    benchmark::DoNotOptimize(r);
  }
  SetFlops(state, p, 2);
}
// Both gradients of a float dot: the two f32 matmuls dx = g·wᵀ, dw = xᵀ·g.
void BM_FloatBackward(benchmark::State& state) { RunBackward(state, QDotConfig{}); }
// Both gradients under int8 QT, everything included (scale shifting, gradient quantization).
void BM_QtBackwardInt8(benchmark::State& state) { RunBackward(state, Int8(QDotImpl::kInteger)); }

// Calibrate + quantize one (M,K) activation per row: reads 4 bytes, writes 1 per element.
void BM_QuantizeRows(benchmark::State& state) {
  Problem p(state);
  const ReduceSpec spec{{1}};
  for (auto _ : state) {
    auto r = QuantizeDynamic(p.x, spec, QType::kInt8, CalibrationMethod{});
    benchmark::DoNotOptimize(r);
  }
  state.SetBytesProcessed(state.iterations() * p.m * p.k * 5);
}

// Memory bandwidth yardstick for the quantize pass: stream-read a 64 MiB float array (sum) and
// copy it (memcpy), single-threaded.
void BM_MemoryReadBandwidth(benchmark::State& state) {
  omp_set_num_threads(1);
  const int64_t n = int64_t{16} << 20;
  Tensor x = Random({n}, 6, 1.0f);
  const float* p = x.data<float>();
  for (auto _ : state) {
    float sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) {
      sum += p[i];
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetBytesProcessed(state.iterations() * n * 4);
}

void BM_MemoryCopyBandwidth(benchmark::State& state) {
  const int64_t n = int64_t{16} << 20;
  Tensor x = Random({n}, 7, 1.0f);
  Tensor y = Tensor::Empty(DType::kF32, {n});
  for (auto _ : state) {
    std::memcpy(y.raw(), x.raw(), x.nbytes());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * n * 8);  // read + write
}

void Shapes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    b->Args({256, 1024, 1024, threads});
    b->Args({1024, 1024, 1024, threads});
    b->Args({4096, 1024, 4096, threads});
    b->Args({32, 4096, 4096, threads});
  }
  b->ArgNames({"M", "K", "N", "threads"})->Unit(benchmark::kMillisecond)->UseRealTime();
}

BENCHMARK(BM_MatmulF32)->Apply(Shapes);
BENCHMARK(BM_MatmulInt8Kernel)->Apply(Shapes);
BENCHMARK(BM_QatForwardInt8)->Apply(Shapes);
BENCHMARK(BM_QatForwardFakeQuant)->Apply(Shapes);
BENCHMARK(BM_FloatBackward)->Apply(Shapes);
BENCHMARK(BM_QtBackwardInt8)->Apply(Shapes);
BENCHMARK(BM_QuantizeRows)->Apply(Shapes);
BENCHMARK(BM_MemoryReadBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_MemoryCopyBandwidth)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace qtrain

BENCHMARK_MAIN();
