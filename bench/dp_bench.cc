// Data-parallel training steps on this machine: 1 rank × 1 thread against N ranks × 1 thread
// (threads of this process, each with its own Trainer and Gloo connections over 127.0.0.1),
// on the same global batch. Counters: the all-reduce time per step (reduce_ms), the part of it
// the step waited for after its backward pass (exposed_ms), and overlap = 1 − exposed / reduce.
// scripts/bench_dp.sh prints the scaling table (docs/PERFORMANCE.md, "Data parallelism").
//
// Args: model (0 MLP 784-1024-1024-10 b256, 1 transformer block b16×128×512), ranks, mode
// (0 float, 1 QAT int8), bucket MiB.
#include <omp.h>

#include <filesystem>
#include <random>
#include <thread>

#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>

#include "bench/bench_models.h"
#include "server/cluster/dp_protocol.h"
#include "server/cluster/gloo_group.h"
#include "server/cluster/group_auth.h"
#include "server/engine/trainer.h"

namespace qtrain::engine {
namespace {

using bench::kBlock;
using bench::kMlp;
using bench::Parse;
using bench::Random;

Batch GlobalBatch(int model) {
  if (model == 1) return Batch{Random({16, 128, 512}, 2), Random({16, 128, 512}, 3)};
  Batch b{Random({256, 784}, 1), Tensor::Empty(DType::kS32, {256})};
  for (int i = 0; i < 256; ++i) b.targets.data<int32_t>()[i] = i % 10;
  return b;
}

std::unique_ptr<Trainer> MakeTrainer(int model, int mode) {
  const proto::RuleSet rules =
      mode == 0
          ? proto::RuleSet()
          : Parse<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})");
  auto opt = Parse<proto::OptimizerConfig>(R"({"sgd": {}, "schedule": {"learning_rate": 1e-4}})");
  auto t = Trainer::Create(Parse<proto::ModelSpec>(model == 1 ? kBlock : kMlp), rules, opt, 1,
                           *MakeOnednnBackend());
  return t.ok() ? std::move(*t) : nullptr;
}

void BM_DataParallelStep(benchmark::State& state) {
  const int model = static_cast<int>(state.range(0));
  const int world = static_cast<int>(state.range(1));
  const int mode = static_cast<int>(state.range(2));
  const int64_t bucket = state.range(3) << 20;
  omp_set_num_threads(1);
  const Batch global = GlobalBatch(model);
  const int64_t rows = global.inputs.dim(0);
  auto shard_of = [&](int rank) {
    int64_t begin = 0;
    for (int r = 0; r < rank; ++r) begin += rows / world + (r < rows % world ? 1 : 0);
    const int64_t n = rows / world + (rank < rows % world ? 1 : 0);
    return std::make_pair(Batch{cluster::SliceRows(global.inputs, begin, begin + n),
                                cluster::SliceRows(global.targets, begin, begin + n)},
                          static_cast<float>(n) / static_cast<float>(rows));
  };
  if (world == 1) {
    std::unique_ptr<Trainer> t = MakeTrainer(model, mode);
    for (int i = 0; i < 2; ++i) (void)t->TrainStep(global);
    for (auto _ : state) {
      if (absl::Status s = t->TrainStep(global).status(); !s.ok()) {
        state.SkipWithError(s.ToString().c_str());
      }
    }
    return;
  }
  const std::string dir = std::filesystem::temp_directory_path().string() + "/qtrain_dp_bench";
  std::filesystem::create_directories(dir);
  const std::string group_id = *cluster::NewGroupId();
  auto connect = [&](int rank) {
    cluster::GroupConfig c;
    c.rendezvous = "file://" + dir;
    c.group_id = group_id;
    c.rank = rank;
    c.world_size = world;
    return cluster::GlooGroup::Connect(c);
  };
  // Ranks 1..N-1 step while rank 0 says so (an all-reduced flag per step, like the leader's
  // acknowledgement of the shards).
  std::vector<std::thread> workers;
  for (int rank = 1; rank < world; ++rank) {
    workers.emplace_back([&, rank] {
      omp_set_num_threads(1);
      std::unique_ptr<Trainer> t = MakeTrainer(model, mode);
      auto group = connect(rank);
      if (!group.ok()) return;
      auto [shard, weight] = shard_of(rank);
      while (true) {
        double go[1] = {0};
        if (!(*group)->AllReduceSum(absl::MakeSpan(go)).ok() || go[0] == 0) return;
        if (!t->TrainShard(shard, **group, weight, bucket).ok()) return;
      }
    });
  }
  std::unique_ptr<Trainer> t = MakeTrainer(model, mode);
  auto group = connect(0);
  if (!group.ok()) {
    state.SkipWithError(group.status().ToString().c_str());
  } else {
    auto [shard, weight] = shard_of(0);
    auto step = [&] {
      double go[1] = {1};
      absl::Status s = (*group)->AllReduceSum(absl::MakeSpan(go));
      if (s.ok()) s = t->TrainShard(shard, **group, weight, bucket).status();
      return s;
    };
    for (int i = 0; i < 2; ++i) (void)step();
    double reduce = 0, exposed = 0;
    for (auto _ : state) {
      if (absl::Status s = step(); !s.ok()) state.SkipWithError(s.ToString().c_str());
      reduce += t->last_reduce_times().reduce_seconds;
      exposed += t->last_reduce_times().exposed_seconds;
    }
    const double n = static_cast<double>(state.iterations());
    state.counters["reduce_ms"] = 1e3 * reduce / n;
    state.counters["exposed_ms"] = 1e3 * exposed / n;
    state.counters["buckets"] = t->last_reduce_times().buckets;
    double stop[1] = {0};
    (void)(*group)->AllReduceSum(absl::MakeSpan(stop));
  }
  for (auto& w : workers) w.join();
}

void Args(benchmark::internal::Benchmark* b) {
  for (int model : {0, 1}) {
    for (int mode : {0, 1}) {
      b->Args({model, 1, mode, 25});
      b->Args({model, 2, mode, 25});
      b->Args({model, 2, mode, 2});
    }
  }
  b->ArgNames({"model", "ranks", "mode", "bucket_mb"})
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}
BENCHMARK(BM_DataParallelStep)->Apply(Args);

}  // namespace
}  // namespace qtrain::engine

BENCHMARK_MAIN();
