// Training-step benchmarks of the engine (issue: training engine): an MLP 784-1024-1024-10 at
// batch 256 and a transformer block (d_model 512, 8 heads, ff 2048, sequence 128, batch 16), in
// float, int8 QAT and int8 QT, at 1 and 2 threads. bench/torch_train_bench.py measures the same
// models in PyTorch; scripts/bench_train.sh runs both and prints the comparison.
#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>
#include <omp.h>

#include <algorithm>
#include <random>
#include <vector>

#include "server/engine/trainer.h"

namespace qtrain::engine {
namespace {

constexpr char kMlp[] = R"({"input": {"shape": [784]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 1024}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 1024}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 10}}]}}})";

constexpr char kBlock[] = R"({"input": {"shape": [128, 512]}, "body": {"sequential": {"layers": [
    {"name": "attn_block", "residual": {"body": {"sequential": {"layers": [
      {"layer_norm": {}}, {"name": "attn", "attention": {"num_heads": 8}}]}}}},
    {"name": "mlp_block", "residual": {"body": {"sequential": {"layers": [
      {"layer_norm": {}}, {"linear": {"features": 2048}}, {"activation": {"kind": "GELU"}},
      {"linear": {"features": 512}}]}}}}]}}, "loss": {"kind": "MSE"}})";

template <typename M>
M Parse(const std::string& json) {
  M m;
  (void)google::protobuf::util::JsonStringToMessage(json, &m);
  return m;
}

proto::RuleSet Rules(int mode) {  // 0 float, 1 QAT int8, 2 QT int8
  if (mode == 0) {
    return {};
  }
  return Parse<proto::RuleSet>(std::string(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8")") + (mode == 2 ? R"(, "bwd_qtype": "int8")" : "") +
                               "}]}");
}

void Run(benchmark::State& state, const char* spec, Batch batch) {
  omp_set_num_threads(static_cast<int>(state.range(1)));
  auto opt = Parse<proto::OptimizerConfig>(R"({"sgd": {}, "schedule": {"learning_rate": 1e-4}})");
  auto trainer = Trainer::Create(Parse<proto::ModelSpec>(spec), Rules(state.range(0)), opt, 1,
                                 *MakeOnednnBackend());
  if (!trainer.ok()) {
    state.SkipWithError(trainer.status().ToString().c_str());
    return;
  }
  for (int i = 0; i < 2; ++i) {
    (void)(*trainer)->TrainStep(batch);  // create primitives
  }
  for (auto _ : state) {
    auto r = (*trainer)->TrainStep(batch);
    if (!r.ok()) {
      state.SkipWithError(r.status().ToString().c_str());
    }
  }
  state.counters["steps_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

Tensor Random(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  Tensor t = Tensor::Empty(DType::kF32, shape);
  for (float& v : t.span<float>()) {
    v = dist(gen);
  }
  return t;
}

void BM_TrainStepMlp(benchmark::State& state) {
  Batch b{Random({256, 784}, 1), Tensor::Empty(DType::kS32, {256})};
  for (int i = 0; i < 256; ++i) {
    b.targets.data<int32_t>()[i] = i % 10;
  }
  Run(state, kMlp, std::move(b));
}

void BM_TrainStepTransformerBlock(benchmark::State& state) {
  Run(state, kBlock, Batch{Random({16, 128, 512}, 2), Random({16, 128, 512}, 3)});
}

void Modes(benchmark::internal::Benchmark* b) {
  for (int threads : {1, 2}) {
    for (int mode : {0, 1, 2}) {
      b->Args({mode, threads});
    }
  }
  // The fastest repetition: on a shared VM, interference only ever adds time.
  b->ArgNames({"mode", "threads"})
      ->Unit(benchmark::kMillisecond)
      ->UseRealTime()
      ->ComputeStatistics("min", [](const std::vector<double>& v) {
        return *std::min_element(v.begin(), v.end());
      });
}

BENCHMARK(BM_TrainStepMlp)->Apply(Modes);
BENCHMARK(BM_TrainStepTransformerBlock)->Apply(Modes);

}  // namespace
}  // namespace qtrain::engine

BENCHMARK_MAIN();
