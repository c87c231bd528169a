// Sessions through checkpoint bytes: a float session's checkpoint rebuilds an identical session
// and loads into QAT/QT sessions; foreign or damaged checkpoints are refused with reasons.
#include "server/store/session_checkpoint.h"

#include <cstring>

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "server/store/checkpoint_io.h"

namespace qtrain::store {
namespace {

using ::testing::HasSubstr;
namespace proto = engine::proto;

template <typename M>
M Json(const std::string& s) {
  M m;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(s, &m).ok()) << s;
  return m;
}

std::unique_ptr<engine::Trainer> MakeTrainer(const proto::ModelSpec& spec,
                                             const proto::RuleSet& rules, uint64_t seed) {
  auto t = engine::Trainer::Create(spec, rules, {}, seed, *MakeOnednnBackend());
  EXPECT_TRUE(t.ok()) << t.status();
  return std::move(*t);
}

engine::Batch Batch(int seed) {
  engine::Batch b{Tensor::Empty(DType::kF32, {8, 6}), Tensor::Empty(DType::kS32, {8})};
  for (int64_t i = 0; i < 48; ++i) {
    b.inputs.data<float>()[i] = std::sin(0.3f * i + seed);
  }
  for (int64_t i = 0; i < 8; ++i) {
    b.targets.data<int32_t>()[i] = (i + seed) % 4;
  }
  return b;
}

const char kSpec[] = R"({"input": {"shape": [6]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 16}}, {"activation": {"kind": "GELU"}},
    {"linear": {"features": 4}}]}}})";

TEST(SessionCheckpointTest, RebuildsAnIdenticalSession) {
  auto rules = Json<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
      "act_static_scale": true}]})");
  auto t = MakeTrainer(Json<proto::ModelSpec>(kSpec), rules, 3);
  for (int s = 0; s < 4; ++s) {
    ASSERT_TRUE(t->TrainStep(Batch(s)).ok());
  }
  const std::string bytes = EncodeCheckpoint(CheckpointFromTrainer(*t).value());

  auto file = DecodeCheckpoint(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  auto config = ConfigFromCheckpoint(*file);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->step, 4);
  EXPECT_EQ(config->seed, 3u);
  EXPECT_EQ(config->backend, t->backend_name());  // a restored session runs where it ran
  EXPECT_EQ(config->rules.rules_size(), 1);
  auto restored = MakeTrainer(config->spec, config->rules, config->seed);
  ASSERT_TRUE(LoadCheckpoint(*file, *restored).ok());
  EXPECT_EQ(restored->step(), 4);
  EXPECT_EQ(restored->quant_stats().size(), t->quant_stats().size());
  auto a = t->Predict(Batch(9).inputs), b = restored->Predict(Batch(9).inputs);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(std::memcmp(a->raw(), b->raw(), a->nbytes()), 0);
  // And the next step is identical too (same seed, step, optimizer state).
  auto ra = t->TrainStep(Batch(5)), rb = restored->TrainStep(Batch(5));
  ASSERT_TRUE(ra.ok() && rb.ok());
  EXPECT_EQ(ra->loss, rb->loss);
}

// The §9 calibrators in a session: percentile and mse weights, entropy static activations whose
// histogram travels in the checkpoint and gives the restored session the same thresholds.
TEST(SessionCheckpointTest, EntropyHistogramsTravelInCheckpoints) {
  auto rules = Json<proto::RuleSet>(R"({"rules": [
      {"module_path": "Dense_0", "weight_qtype": "int8", "weight_calibration_method": "mse,16",
       "act_qtype": "int8", "act_calibration_method": "entropy,256", "act_static_scale": true},
      {"weight_qtype": "int4", "weight_calibration_method": "percentile,99.9",
       "act_qtype": "int8", "act_calibration_method": "percentile,99", "act_static_scale": true}]})");
  auto t = MakeTrainer(Json<proto::ModelSpec>(kSpec), rules, 3);
  for (int s = 0; s < 3; ++s) ASSERT_TRUE(t->CalibrateStep(Batch(s).inputs).ok());
  ASSERT_TRUE(t->TrainStep(Batch(7)).ok());  // training keeps updating the statistics
  const auto& stats = t->quant_stats();
  ASSERT_EQ(stats.size(), 2u);
  int entropy = 0;
  for (const auto& [key, stat] : stats) {
    EXPECT_EQ(stat.count, 4) << key.first;
    if (stat.entropy) {
      ++entropy;
      EXPECT_EQ(key.first, "Dense_0");
      EXPECT_EQ(stat.entropy->bins, 256);
      EXPECT_GT(stat.entropy->range, 0.0f);
      double total = 0;
      for (double c : stat.entropy->hist) total += c;
      EXPECT_EQ(total, 4 * 8 * 6);  // every |x| of 4 batches of 8×6
    }
  }
  EXPECT_EQ(entropy, 1);
  auto file = DecodeCheckpoint(EncodeCheckpoint(CheckpointFromTrainer(*t).value()));
  ASSERT_TRUE(file.ok()) << file.status();
  auto restored = MakeTrainer(Json<proto::ModelSpec>(kSpec), rules, 3);
  ASSERT_TRUE(LoadCheckpoint(*file, *restored).ok());
  for (const auto& [key, stat] : stats) {
    const SrqStat& back = restored->quant_stats().at(key);
    EXPECT_EQ(back.count, stat.count);
    EXPECT_EQ(back.entropy.has_value(), stat.entropy.has_value());
    if (stat.entropy) {
      EXPECT_EQ(back.entropy->range, stat.entropy->range);
      EXPECT_EQ(back.entropy->hist, stat.entropy->hist);
    }
  }
  auto a = t->Predict(Batch(9).inputs), b = restored->Predict(Batch(9).inputs);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(std::memcmp(a->raw(), b->raw(), a->nbytes()), 0);
  // A damaged histogram is refused, naming the stat.
  file->tensors["quant_stats/Dense_0/dot_general0_lhs/entropy_hist"].data<float>()[3] = 0.5f;
  auto again = MakeTrainer(Json<proto::ModelSpec>(kSpec), rules, 3);
  const absl::Status s = LoadCheckpoint(*file, *again);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("Dense_0/dot_general0_lhs\" entropy: bin 3"));
}

TEST(SessionCheckpointTest, FloatCheckpointsLoadIntoQtSessions) {
  auto fp = MakeTrainer(Json<proto::ModelSpec>(kSpec), {}, 1);
  ASSERT_TRUE(fp->TrainStep(Batch(0)).ok());
  auto file = DecodeCheckpoint(EncodeCheckpoint(CheckpointFromTrainer(*fp).value()));
  ASSERT_TRUE(file.ok());
  auto qt = MakeTrainer(Json<proto::ModelSpec>(kSpec),
                        Json<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
                            "act_qtype": "int8", "bwd_qtype": "int8"}]})"),
                        2);
  ASSERT_TRUE(LoadCheckpoint(*file, *qt).ok());
  auto r = qt->TrainStep(Batch(1));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->step, 2);
}

TEST(SessionCheckpointTest, ForeignAndMismatchedCheckpointsAreRefused) {
  SafetensorsFile foreign;
  foreign.tensors["w"] = Tensor::Zeros(DType::kF32, {2});
  auto c = ConfigFromCheckpoint(foreign);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(c.status().message(), HasSubstr("model_spec"));

  auto t = MakeTrainer(Json<proto::ModelSpec>(kSpec), {}, 1);
  auto other = MakeTrainer(Json<proto::ModelSpec>(R"({"input": {"shape": [6]},
      "body": {"sequential": {"layers": [{"linear": {"features": 5}}]}}})"),
                           {}, 1);
  absl::Status s = LoadCheckpoint(CheckpointFromTrainer(*other).value(), *t);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("params/Dense_0/kernel"));
  SafetensorsFile bad_step = CheckpointFromTrainer(*t).value();
  bad_step.metadata["step"] = "-3";
  EXPECT_THAT(LoadCheckpoint(bad_step, *t).message(), HasSubstr("\"step\""));
  SafetensorsFile bad_backend = CheckpointFromTrainer(*t).value();
  bad_backend.metadata["backend"] = "cuda";
  EXPECT_THAT(ConfigFromCheckpoint(bad_backend).status().message(),
              HasSubstr("checkpoint metadata \"backend\" = \"cuda\" is not one of onednn"));
}

}  // namespace
}  // namespace qtrain::store
