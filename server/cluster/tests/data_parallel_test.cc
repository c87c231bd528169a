// Data-parallel steps against the single-process step on the same global batch: ranks are
// threads here, each with its own Trainer and Gloo connections over 127.0.0.1 (the rank
// processes of a real group are tested in tests/integration/data_parallel_process_test.cc).
#include <omp.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/cluster/dp_protocol.h"
#include "server/cluster/gloo_group.h"
#include "server/cluster/group_auth.h"
#include "server/engine/tests/test_models.h"

namespace qtrain::cluster {
namespace {

using engine::Batch;
using engine::Trainer;
using engine::testing::FromJson;
using State = std::map<std::string, Tensor>;
namespace proto = ::qtrain::v1;

constexpr char kMlp[] = R"({"input": {"shape": [12]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 32}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 24}}, {"activation": {"kind": "GELU"}},
    {"linear": {"features": 5}}]}}})";

// A causal LM whose shards count different numbers of tokens (ignore_index labels).
constexpr char kLm[] = R"({"input": {"kind": "TOKENS", "shape": [8]}, "body": {"sequential":
    {"layers": [{"embedding": {"num_embeddings": 11, "features": 16}},
      {"name": "block", "residual": {"body": {"sequential": {"layers": [
        {"layer_norm": {}}, {"name": "attn", "attention": {"num_heads": 2, "causal": true}}]}}}},
      {"layer_norm": {}}, {"name": "head", "linear": {"features": 11}}]}},
    "loss": {"kind": "SOFTMAX_CROSS_ENTROPY", "ignore_index": -100, "shift_labels": true}})";

constexpr char kMomentum[] = R"({"sgd": {"momentum": 0.9}, "schedule": {"learning_rate": 0.05}})";
constexpr char kAdamW[] = R"({"adamw": {"weight_decay": 0.01}, "clip_global_norm": 1.0,
    "schedule": {"learning_rate": 0.01}})";

Batch MlpBatch(int step, int64_t rows) {
  Batch b{Tensor::Empty(DType::kF32, {rows, 12}), Tensor::Empty(DType::kS32, {rows})};
  for (int64_t i = 0; i < rows * 12; ++i) {
    b.inputs.data<float>()[i] = std::sin(0.37f * i + 1.3f * step) * (1 + (i % 7));
  }
  for (int64_t i = 0; i < rows; ++i) b.targets.data<int32_t>()[i] = (i * 3 + step) % 5;
  return b;
}

Batch LmBatch(int step, int64_t rows) {
  Batch b{Tensor::Empty(DType::kS32, {rows, 8}), Tensor::Empty(DType::kS32, {rows, 8})};
  for (int64_t i = 0; i < rows * 8; ++i) {
    const int32_t id = static_cast<int32_t>((i * 7 + step * 3 + i / 8) % 11);
    b.inputs.data<int32_t>()[i] = id;
    // Later rows learn from fewer tokens: the shards' counts differ.
    b.targets.data<int32_t>()[i] = (i % 8) < 8 - (i / 8) % 5 ? id : -100;
  }
  return b;
}

struct Case {
  std::string spec;
  proto::RuleSet rules;
  std::string optimizer;
  Batch (*batch)(int, int64_t);
  int64_t rows = 30;
  int steps = 10;
};

std::unique_ptr<Trainer> MakeTrainer(const Case& s) {
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(s.spec), s.rules,
                           FromJson<proto::OptimizerConfig>(s.optimizer), 17,
                           engine::testing::OnednnBackend());
  EXPECT_TRUE(t.ok()) << t.status();
  return t.ok() ? std::move(*t) : nullptr;
}

State Single(const Case& s, std::vector<double>* losses) {
  std::unique_ptr<Trainer> t = MakeTrainer(s);
  for (int i = 0; i < s.steps; ++i) {
    auto r = t->TrainStep(s.batch(i, s.rows));
    EXPECT_TRUE(r.ok()) << r.status();
    if (r.ok()) losses->push_back(r->loss);
  }
  return t->ExportState().value();
}

// Every rank's state after the steps; rank 0's losses.
std::vector<State> Parallel(const Case& s, int world, std::vector<double>* losses) {
  const std::string dir = ::testing::TempDir() + "/dp_rendezvous";
  std::filesystem::create_directories(dir);
  const std::string group_id = *NewGroupId();
  std::vector<State> states(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      omp_set_num_threads(1);
      std::unique_ptr<Trainer> t = MakeTrainer(s);
      GroupConfig config;
      config.rendezvous = "file://" + dir;
      config.group_id = group_id;
      config.rank = rank;
      config.world_size = world;
      auto group = GlooGroup::Connect(config);
      ASSERT_TRUE(group.ok()) << group.status();
      for (int i = 0; i < s.steps; ++i) {
        const Batch global = s.batch(i, s.rows);
        int64_t begin = 0;
        for (int r = 0; r < rank; ++r) begin += s.rows / world + (r < s.rows % world ? 1 : 0);
        const int64_t n = s.rows / world + (rank < s.rows % world ? 1 : 0);
        Batch shard{SliceRows(global.inputs, begin, begin + n),
                    SliceRows(global.targets, begin, begin + n)};
        auto r = t->TrainShard(shard, **group, static_cast<float>(n) / s.rows, 1 << 10);
        ASSERT_TRUE(r.ok()) << "rank " << rank << ": " << r.status();
        if (rank == 0) losses->push_back(r->loss);
      }
      states[rank] = t->ExportState().value();
    });
  }
  for (auto& th : threads) th.join();
  return states;
}

// max |a − b| over max |b| for every tensor of `prefix`.
void ExpectClose(const State& got, const State& want, const std::string& prefix, double rel) {
  int compared = 0;
  for (const auto& [name, w] : want) {
    if (name.rfind(prefix, 0) != 0 || w.dtype() != DType::kF32) continue;
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << name;
    ASSERT_EQ(it->second.shape(), w.shape()) << name;
    double diff = 0, peak = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      diff = std::max(diff, std::abs(double{it->second.data<float>()[i]} - w.data<float>()[i]));
      peak = std::max(peak, std::abs(double{w.data<float>()[i]}));
    }
    // The floor: a parameter whose exact gradient is zero (an attention key bias) moves by
    // rounding noise alone.
    EXPECT_LE(diff, rel * peak + 1e-7) << name << ": max diff " << diff << ", peak " << peak;
    ++compared;
  }
  EXPECT_GT(compared, 0) << "no tensor named " << prefix << "...";
}

// ‖a − b‖ / ‖b‖ over every tensor of `prefix` together.
double GlobalRelative(const State& got, const State& want, const std::string& prefix) {
  double diff = 0, norm = 0;
  for (const auto& [name, w] : want) {
    if (name.rfind(prefix, 0) != 0 || w.dtype() != DType::kF32) continue;
    const Tensor& g = got.at(name);
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double d = double{g.data<float>()[i]} - w.data<float>()[i];
      diff += d * d;
      norm += double{w.data<float>()[i]} * w.data<float>()[i];
    }
  }
  return norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff);
}

void ExpectIdentical(const State& a, const State& b) {
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, t] : a) {
    const Tensor& u = b.at(name);
    ASSERT_EQ(t.nbytes(), u.nbytes()) << name;
    EXPECT_EQ(std::memcmp(t.raw(), u.raw(), t.nbytes()), 0) << name << " differs between ranks";
  }
}

// `rel`: weights and optimizer state relative to each tensor's peak; `loss_rel`: the losses.
void CheckAgainstSingle(const Case& s, int world, double rel, double loss_rel = 1e-5,
                        double stats_rel = 0) {
  std::vector<double> want_losses, got_losses;
  const State want = Single(s, &want_losses);
  const std::vector<State> got = Parallel(s, world, &got_losses);
  ASSERT_EQ(got_losses.size(), want_losses.size());
  for (size_t i = 0; i < want_losses.size(); ++i) {
    EXPECT_NEAR(got_losses[i], want_losses[i], loss_rel * std::abs(want_losses[i])) << "step " << i;
  }
  ExpectClose(got[0], want, "params/", rel);
  ExpectClose(got[0], want, "opt/", rel);
  if (stats_rel > 0) ExpectClose(got[0], want, "quant_stats/", stats_rel);
  for (int r = 1; r < world; ++r) ExpectIdentical(got[r], got[0]);
}

TEST(DataParallelTest, FloatStepsEqualOneProcess) {
  Case s{kMlp, {}, kMomentum, MlpBatch};
  CheckAgainstSingle(s, 2, 1e-5);
  CheckAgainstSingle(s, 4, 1e-5);  // 30 rows: shards of 8, 8, 7, 7
}

// Ten QAT steps: weights and statistics within `rel` of the single process (relative, all
// tensors together), losses within 1e-3, and every rank identical.
void CheckQatAfterFlips(const Case& s, int world, double rel = 1e-4) {
  std::vector<double> want_losses, got_losses;
  const State want = Single(s, &want_losses);
  const std::vector<State> got = Parallel(s, world, &got_losses);
  EXPECT_LE(GlobalRelative(got[0], want, "params/"), rel) << world << " ranks";
  EXPECT_LE(GlobalRelative(got[0], want, "quant_stats/"), rel) << world << " ranks";
  for (size_t i = 0; i < want_losses.size(); ++i) {
    EXPECT_NEAR(got_losses[i], want_losses[i], 1e-3 * want_losses[i]) << "step " << i;
  }
  for (int r = 1; r < world; ++r) ExpectIdentical(got[r], got[0]);
}

// QAT rounds weights and activations to int8: float32 summation noise in the summed gradients
// (1e-8) stays noise until it moves some value across a rounding boundary — one int8 step —
// after which the runs part slowly. So QAT equals the single process as float does for the
// first steps, and then agrees to a looser bound (docs/scaling.md, "Same numbers").
TEST(DataParallelTest, QatStepsAndSrqStatisticsMatchOneProcess) {
  Case s{kMlp, FromJson<proto::RuleSet>(R"({"rules": [{"module_path": ".*",
      "weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": true}]})"),
         kMomentum, MlpBatch};
  s.steps = 4;
  CheckAgainstSingle(s, 2, 1e-5, 1e-5, 1e-5);
  CheckAgainstSingle(s, 4, 1e-5, 1e-5, 1e-5);
  s.steps = 10;
  CheckQatAfterFlips(s, 2);
  CheckQatAfterFlips(s, 4);
}

// QT quantizes the gradient operand of dW per column over the shard's rows: each rank picks
// its own scales (and stochastic rounding draws differ), so QT matches within its tolerance.
TEST(DataParallelTest, QtStepsMatchOneProcessWithinTheQtTolerance) {
  Case s{kMlp, engine::testing::Int8Rules(true), kMomentum, MlpBatch};
  for (int world : {2, 4}) {
    std::vector<double> want_losses, got_losses;
    const State want = Single(s, &want_losses);
    const std::vector<State> got = Parallel(s, world, &got_losses);
    const double rel = GlobalRelative(got[0], want, "params/");
    EXPECT_LE(rel, 2e-2) << world << " ranks";
    EXPECT_GT(rel, 0) << "QT shards should not reproduce the single process bit for bit";
    for (size_t i = 0; i < want_losses.size(); ++i) {
      EXPECT_NEAR(got_losses[i], want_losses[i], 2e-2 * want_losses[i]) << "step " << i;
    }
    for (int r = 1; r < world; ++r) ExpectIdentical(got[r], got[0]);
  }
}

TEST(DataParallelTest, TokenCountsWeightTheShardsOfALanguageModel) {
  Case s{kLm, {}, kMomentum, LmBatch};
  s.rows = 10;
  CheckAgainstSingle(s, 2, 1e-5);
  CheckAgainstSingle(s, 4, 1e-5);  // shards of 3, 3, 2, 2 sequences
  // int8 attention einsums: more to round. One process at 1 and at 2 threads ends 2.4e-4 apart
  // after these 10 steps (another summation order), as far as the 4 ranks are from it.
  s.rules = engine::testing::Int8Rules(false);
  CheckQatAfterFlips(s, 4, 5e-4);
}

// A head tied to the embedding: the table's gradient has two parts, the head's (early in the
// backward) and the embedding's (last); it must be all-reduced only once both are in.
TEST(DataParallelTest, ATiedEmbeddingIsReducedOnceBothGradientsAreIn) {
  std::string tied = kLm;
  const std::string head = R"({"name": "head", "linear": {"features": 11}})";
  tied.replace(tied.find(head), head.size(),
               R"({"name": "head", "linear": {"features": 11, "tied_to": "Embed_0"}})");
  Case s{tied, {}, kMomentum, LmBatch};
  s.rows = 10;
  CheckAgainstSingle(s, 2, 1e-5);
}

// BatchNorm normalises with each shard's statistics (no synchronised batch norm); the running
// statistics are averaged over the ranks, so that every rank keeps the same ones. With equal
// shards the running mean is the global batch's (the mean of the shard means).
TEST(DataParallelTest, BatchNormRunningStatisticsAreAveragedAcrossRanks) {
  Case s{R"({"input": {"shape": [12]}, "body": {"sequential": {"layers": [
      {"linear": {"features": 16}}, {"batch_norm": {}}, {"activation": {"kind": "RELU"}},
      {"linear": {"features": 5}}]}}})",
         {},
         kMomentum,
         MlpBatch};
  s.rows = 32;
  s.steps = 1;
  std::vector<double> l1, l2;
  const State want = Single(s, &l1);
  const std::vector<State> got = Parallel(s, 2, &l2);
  ExpectIdentical(got[1], got[0]);
  int means = 0;
  for (const auto& [name, t] : want) {
    if (name.rfind("batch_stats/", 0) != 0 || name.find("mean") == std::string::npos) continue;
    ExpectClose(got[0], want, name, 1e-5);
    ++means;
  }
  EXPECT_EQ(means, 1);
}

TEST(DataParallelTest, ProtocolRoundTripsAndRefusesCorruptMessages) {
  Message m;
  m.kind = MessageKind::kState;
  m.step = 42;
  m.blobs = {"rules"};
  m.tensors.emplace_back("params/w", Tensor::FromFloats({2, 2}, {1, 2, 3, 4}));
  const std::string bytes = Encode(m);
  auto back = Decode(bytes);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->step, 42);
  ASSERT_EQ(back->tensors.size(), 1u);
  EXPECT_EQ(back->tensors[0].second.data<float>()[3], 4.0f);
  for (size_t cut = 0; cut < bytes.size(); ++cut) {
    EXPECT_EQ(Decode(bytes.substr(0, cut)).status().code(), absl::StatusCode::kDataLoss) << cut;
  }
  std::string huge = bytes;
  huge[huge.size() - 16 - 8 - 1] = '\x7f';  // a dimension of the tensor
  EXPECT_FALSE(Decode(huge).ok());
}

TEST(DataParallelTest, ProofsDependOnTheSecretAndTheRank) {
  const std::string id = *NewGroupId();
  EXPECT_EQ(id.size(), 32u);
  EXPECT_NE(id, *NewGroupId());
  EXPECT_TRUE(ProofEquals(RankProof("s", id, 1), RankProof("s", id, 1)));
  EXPECT_FALSE(ProofEquals(RankProof("s", id, 1), RankProof("t", id, 1)));
  EXPECT_FALSE(ProofEquals(RankProof("s", id, 1), RankProof("s", id, 2)));
  EXPECT_FALSE(ProofEquals(JoinProof("s", id, 1, 2), JoinProof("s", id, 1, 3)));
  EXPECT_FALSE(ValidateRendezvous("file://relative").ok());
  EXPECT_FALSE(ValidateRendezvous("redis://host:99999").ok());
  EXPECT_FALSE(ValidateRendezvous("etcd://x").ok());
  EXPECT_TRUE(ValidateRendezvous("redis://10.0.0.1:6379").ok());
}

}  // namespace
}  // namespace qtrain::cluster
