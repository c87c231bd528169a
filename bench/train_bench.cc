// Training-step benchmarks of the engine: an MLP 784-1024-1024-10 at batch 256, a transformer
// block (d_model 512, 8 heads, ff 2048, sequence 128, batch 16), and torchvision's ResNet-18 and
// MobileNetV2 (64x64x3, 10 classes, batch 32; their inference too), in float, int8 QAT and int8
// QT, at 1 and 2 threads. bench/torch_train_bench.py measures the same models in PyTorch;
// scripts/bench_train.sh runs both and prints the comparison. Language models (BM_TrainStepLm*:
// GPT-2-small and a Llama of its size, sequence 256) in float, w8a8 QAT, 8da4w QAT and QT int8,
// with the process's peak RSS: bench/torch_lm_bench.py and scripts/bench_lm.sh.
#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>
#include <omp.h>

#include <sys/resource.h>

#include <algorithm>
#include <random>
#include <vector>

#include "bench/bench_models.h"
#include "server/engine/architectures.h"
#include "server/engine/trainer.h"

namespace qtrain::engine {
namespace {

using bench::kBlock;
using bench::kMlp;
using bench::Parse;
using bench::Random;

proto::RuleSet Rules(int mode) {  // 0 float, 1 QAT int8, 2 QT int8
  if (mode == 0) {
    return {};
  }
  return Parse<proto::RuleSet>(std::string(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8")") + (mode == 2 ? R"(, "bwd_qtype": "int8")" : "") +
                               "}]}");
}

// Training steps (or, with `inference`, Forward passes) of `spec` on `batch`.
void Run(benchmark::State& state, const proto::ModelSpec& spec, Batch batch,
         bool inference = false) {
  omp_set_num_threads(static_cast<int>(state.range(1)));
  auto opt = Parse<proto::OptimizerConfig>(R"({"sgd": {}, "schedule": {"learning_rate": 1e-4}})");
  auto trainer = Trainer::Create(spec, Rules(state.range(0)), opt, 1, *MakeOnednnBackend());
  if (!trainer.ok()) {
    state.SkipWithError(trainer.status().ToString().c_str());
    return;
  }
  auto once = [&]() -> absl::Status {
    if (inference) return (*trainer)->Predict(batch.inputs).status();
    return (*trainer)->TrainStep(batch).status();
  };
  for (int i = 0; i < 2; ++i) {
    (void)once();  // create primitives
  }
  for (auto _ : state) {
    absl::Status s = once();
    if (!s.ok()) {
      state.SkipWithError(s.ToString().c_str());
    }
  }
  state.counters["steps_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

void BM_TrainStepMlp(benchmark::State& state) {
  Batch b{Random({256, 784}, 1), Tensor::Empty(DType::kS32, {256})};
  for (int i = 0; i < 256; ++i) {
    b.targets.data<int32_t>()[i] = i % 10;
  }
  Run(state, Parse<proto::ModelSpec>(kMlp), std::move(b));
}

void BM_TrainStepTransformerBlock(benchmark::State& state) {
  Run(state, Parse<proto::ModelSpec>(kBlock),
      Batch{Random({16, 128, 512}, 2), Random({16, 128, 512}, 3)});
}

// torchvision's `name` at 64x64x3 with 10 classes, batch 32.
void RunTorchvision(benchmark::State& state, const char* name, bool inference) {
  proto::Architecture a;
  a.set_name(name);
  (*a.mutable_options())["num_classes"] = 10;
  for (int64_t d : {64, 64, 3}) a.add_input_shape(d);
  auto spec = ExpandArchitecture(a);
  if (!spec.ok()) {
    state.SkipWithError(spec.status().ToString().c_str());
    return;
  }
  Batch b{Random({32, 64, 64, 3}, 4), Tensor::Empty(DType::kS32, {32})};
  for (int i = 0; i < 32; ++i) {
    b.targets.data<int32_t>()[i] = i % 10;
  }
  Run(state, *spec, std::move(b), inference);
}

void BM_TrainStepResnet18(benchmark::State& state) {
  RunTorchvision(state, "torchvision:resnet18", false);
}
void BM_TrainStepMobilenetV2(benchmark::State& state) {
  RunTorchvision(state, "torchvision:mobilenet_v2", false);
}
void BM_ForwardResnet18(benchmark::State& state) {
  RunTorchvision(state, "torchvision:resnet18", true);
}
void BM_ForwardMobilenetV2(benchmark::State& state) {
  RunTorchvision(state, "torchvision:mobilenet_v2", true);
}

void Arguments(benchmark::internal::Benchmark* b, int modes) {
  for (int threads : {1, 2}) {
    for (int mode = 0; mode < modes; ++mode) {
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
// Training: float, QAT int8, QT int8.
void Modes(benchmark::internal::Benchmark* b) { Arguments(b, 3); }
// Inference: float, int8 (QAT and QT rules run the same forward pass).
void InferenceModes(benchmark::internal::Benchmark* b) { Arguments(b, 2); }

// GPT-2 small (12 layers, d 768, 12 heads, vocabulary 50257, tied head) and a Llama of its size
// (GQA 12 / 4 heads, SwiGLU 2048, vocabulary 32000), from their Hugging Face configs.
constexpr char kGpt2[] = R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12,
    "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5})";
constexpr char kLlama[] = R"({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
    "vocab_size": 32000, "hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
    "num_attention_heads": 12, "num_key_value_heads": 4, "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5, "tie_word_embeddings": false})";
constexpr int64_t kLmBatch = 2, kLmSeq = 256;

// 0 float, 1 w8a8 QAT, 2 8da4w QAT, 3 QT int8 (w8a8 with int8 gradients): the linear layers,
// lm_head float, as the CLI's presets.
proto::RuleSet LmRules(int mode) {
  if (mode == 0) return {};
  const std::string quantized = mode == 2 ? R"("weight_qtype": "int4", "act_qtype": "int8",
      "tile_size": 32, "tile_weights_only": true)"
                                          : std::string(R"("weight_qtype": "int8",
      "act_qtype": "int8")") + (mode == 3 ? R"(, "bwd_qtype": "int8")" : "");
  return Parse<proto::RuleSet>(R"({"rules": [{"module_path": "lm_head"},
      {"op_names": ["dot_general"], )" +
                               quantized + "}]}");
}

void RunLm(benchmark::State& state, const char* config) {
  omp_set_num_threads(static_cast<int>(state.range(1)));
  proto::Architecture a;
  a.set_name("hf");
  a.set_hf_config(config);
  a.add_input_shape(kLmSeq);
  auto spec = ExpandArchitecture(a);
  auto opt = Parse<proto::OptimizerConfig>(R"({"sgd": {}, "schedule": {"learning_rate": 1e-4}})");
  absl::StatusOr<std::unique_ptr<Trainer>> trainer =
      spec.ok() ? Trainer::Create(*spec, LmRules(static_cast<int>(state.range(0))), opt, 1,
                                  *MakeOnednnBackend())
                : absl::StatusOr<std::unique_ptr<Trainer>>(spec.status());
  if (!trainer.ok()) {
    state.SkipWithError(trainer.status().ToString().c_str());
    return;
  }
  std::mt19937 gen(5);
  Batch b{Tensor::Empty(DType::kS32, {kLmBatch, kLmSeq}), Tensor()};
  for (int32_t& id : b.inputs.span<int32_t>()) id = static_cast<int32_t>(gen() % 32000);
  b.targets = b.inputs;            // causal LM: labels are the ids, shifted by the loss
  (void)(*trainer)->TrainStep(b);  // create primitives
  for (auto _ : state) {
    if (absl::Status s = (*trainer)->TrainStep(b).status(); !s.ok()) {
      state.SkipWithError(s.ToString().c_str());
    }
  }
  state.counters["tokens_per_s"] = benchmark::Counter(
      static_cast<double>(state.iterations() * kLmBatch * kLmSeq), benchmark::Counter::kIsRate);
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);  // peak of the whole process: run one benchmark per process
  state.counters["peak_rss_mb"] = static_cast<double>(usage.ru_maxrss) / 1024.0;
}

void BM_TrainStepLmGpt2(benchmark::State& state) { RunLm(state, kGpt2); }
void BM_TrainStepLmLlama(benchmark::State& state) { RunLm(state, kLlama); }

BENCHMARK(BM_TrainStepMlp)->Apply(Modes);
BENCHMARK(BM_TrainStepTransformerBlock)->Apply(Modes);
BENCHMARK(BM_TrainStepResnet18)->Apply(Modes);
BENCHMARK(BM_TrainStepMobilenetV2)->Apply(Modes);
BENCHMARK(BM_ForwardResnet18)->Apply(InferenceModes);
BENCHMARK(BM_ForwardMobilenetV2)->Apply(InferenceModes);
// Float, w8a8 QAT, 8da4w QAT, QT int8; seconds a step, so few iterations.
void LmModes(benchmark::internal::Benchmark* b) {
  Arguments(b, 4);
  b->Iterations(2);
}
BENCHMARK(BM_TrainStepLmGpt2)->Apply(LmModes);
BENCHMARK(BM_TrainStepLmLlama)->Apply(LmModes);

}  // namespace
}  // namespace qtrain::engine

BENCHMARK_MAIN();
