// Model building, validation, naming, QAT == fake quantization at model level, SRQ statistics
// against the golden vectors, determinism, state dicts, and bad requests leaving state alone.
#include <fstream>
#include <set>
#include <sstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "server/engine/module_kind.h"
#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;
using ::testing::HasSubstr;

constexpr char kMlp[] = R"({"input": {"shape": [12]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 16}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 3}}]}}})";

struct BadSpec {
  const char* json;
  absl::StatusCode code;
  const char* part;
};

TEST(ModelTest, BadSpecsNameTheModuleAndField) {
  const std::vector<BadSpec> cases = {
      {R"({"body": {"linear": {"features": 2}}})", absl::StatusCode::kInvalidArgument,
       "input.shape is empty"},
      {R"({"input": {"shape": [4]}})", absl::StatusCode::kInvalidArgument, "body is not set"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [{}]}}})",
       absl::StatusCode::kInvalidArgument, "has no kind"},
      {R"({"input": {"shape": [784]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 8, "kernel_size": [3, 3]}}]}}})",
       absl::StatusCode::kInvalidArgument, "\"Conv_0\": conv2d needs (H, W, C)"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"linear": {"features": 0}}]}}})",
       absl::StatusCode::kInvalidArgument, "\"Dense_0\": features = 0"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"linear": {"features": 16000000}}, {"linear": {"features": 16000000}}]}}})",
       absl::StatusCode::kResourceExhausted, "the limit is"},
      {R"({"input": {"shape": [6, 8]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 3}}]}}})",
       absl::StatusCode::kInvalidArgument, "not divisible by num_heads"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"residual": {"body": {"linear": {"features": 3}}}}]}}})",
       absl::StatusCode::kInvalidArgument, "residual body maps"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"embedding": {"num_embeddings": 5, "features": 3}}]}}})",
       absl::StatusCode::kInvalidArgument, "needs TOKENS input"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"dropout": {"rate": 1.5}}]}}})",
       absl::StatusCode::kInvalidArgument, "dropout rate 1.5"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"name": "fc", "linear": {"features": 8}}, {"name": "fc", "linear": {"features": 9}}]}}})",
       absl::StatusCode::kInvalidArgument, "\"fc\" is used twice"},
      {R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
           {"name": "Dense_1", "linear": {"features": 8}}, {"linear": {"features": 9}},
           {"linear": {"features": 9}}]}}})",
       absl::StatusCode::kInvalidArgument, "\"Dense_1\" is used twice"},
      {R"({"input": {"kind": "TOKENS", "shape": [4]}, "body": {"sequential": {"layers": [
           {"flatten": {}}]}}})",
       absl::StatusCode::kInvalidArgument, "needs an embedding"},
      {R"({"input": {"shape": [8, 8, 4]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 1, "kernel_size": [1, 4611686018427387904]}}]}}})",
       absl::StatusCode::kInvalidArgument, "kernel_size = 4611686018427387904"},
      {R"({"input": {"shape": [8, 8, 4]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 6, "kernel_size": [3, 3], "feature_group_count": 4}}]}}})",
       absl::StatusCode::kInvalidArgument,
       "feature_group_count 4 must divide both the input channels (4) and features (6)"},
      {R"({"input": {"shape": [8, 8, 4]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 4, "kernel_size": [3, 3], "feature_group_count": -2}}]}}})",
       absl::StatusCode::kInvalidArgument, "feature_group_count -2"},
      {R"({"input": {"shape": [8, 8, 4]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 4, "kernel_size": [3, 3], "kernel_dilation": [0, 1]}}]}}})",
       absl::StatusCode::kInvalidArgument, "\"Conv_0\": kernel_dilation = 0"},
      {R"({"input": {"shape": [8, 8, 4]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 4, "kernel_size": [3, 3], "kernel_dilation": [2]}}]}}})",
       absl::StatusCode::kInvalidArgument, "kernel_dilation must be [dh, dw]"},
      {R"({"input": {"shape": [8, 8, 4]}, "body": {"sequential": {"layers": [
           {"conv2d": {"features": 4, "kernel_size": [3, 3], "padding": "VALID",
                       "kernel_dilation": [4, 1]}}]}}})",
       absl::StatusCode::kInvalidArgument, "(dilated 9x3) is larger than the padded input 8x8"},
      {R"({"input": {"shape": [5, 8]}, "body": {"sequential": {"layers": [
           {"take_token": {"index": 5}}]}}})",
       absl::StatusCode::kInvalidArgument, "take_token index 5 must be in [0, 5)"},
      {R"({"input": {"shape": [4, 4, 8]}, "body": {"sequential": {"layers": [
           {"class_token": {}}]}}})",
       absl::StatusCode::kInvalidArgument, "\"ClassToken_0\": class_token needs (T, D) tokens"},
      {R"({"input": {"shape": [16]}, "body": {"sequential": {"layers": [
           {"to_tokens": {}}]}}})",
       absl::StatusCode::kInvalidArgument, "to_tokens needs (H, W, C) feature maps, got [16]"},
      {R"({"input": {"shape": [16384, 64]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 64}}]}}})",
       absl::StatusCode::kResourceExhausted, "attention scores"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 3, "num_kv_heads": 2}}]}}})",
       absl::StatusCode::kInvalidArgument, "num_heads 3 is not a multiple of num_kv_heads 2"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 2, "head_dim": 4, "qkv_features": 12}}]}}})",
       absl::StatusCode::kInvalidArgument, "qkv_features 12 differs from num_heads 2 x head_dim 4"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 4, "rotary": {}}}]}}})",
       absl::StatusCode::kInvalidArgument, "rotary embeddings need an even head_dim, got 3"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 2, "rotary": {"scaling": "LLAMA3", "factor": 8,
                                                     "low_freq_factor": 1}}}]}}})",
       absl::StatusCode::kInvalidArgument, "rotary scaling needs high_freq_factor > 0, got 0"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 2, "rotary": {"scaling": "LINEAR"}}}]}}})",
       absl::StatusCode::kInvalidArgument, "rotary scaling needs factor > 0, got 0"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"attention": {"num_heads": 2, "num_kv_heads": 1, "packed_projection": true}}]}}})",
       absl::StatusCode::kInvalidArgument, "packed_projection takes neither num_kv_heads"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"gated_mlp": {"hidden_features": 0}}]}}})",
       absl::StatusCode::kInvalidArgument, "hidden_features = 0"},
      {R"({"input": {"shape": [4, 12]}, "body": {"sequential": {"layers": [
           {"gated_mlp": {"hidden_features": 8, "activation": 42}}]}}})",
       absl::StatusCode::kInvalidArgument, "unknown activation kind 42"},
  };
  for (const BadSpec& c : cases) {
    auto m = Model::Build(FromJson<proto::ModelSpec>(c.json), 1);
    ASSERT_FALSE(m.ok()) << c.json;
    EXPECT_EQ(m.status().code(), c.code) << m.status();
    EXPECT_THAT(m.status().message(), HasSubstr(c.part));
  }
}

// Every kind model.proto declares is a registered module kind, under its own field and with a
// distinct Linen type name.
TEST(ModelTest, EveryModuleKindIsRegistered) {
  const google::protobuf::OneofDescriptor* kind =
      proto::Module::descriptor()->FindOneofByName("kind");
  ASSERT_NE(kind, nullptr);
  std::set<std::string> type_names;
  for (int i = 0; i < kind->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* f = kind->field(i);
    const ModuleKind* k = FindModuleKind(static_cast<proto::Module::KindCase>(f->number()));
    ASSERT_NE(k, nullptr) << f->name();
    EXPECT_EQ(k->field, f->name());
    EXPECT_TRUE(type_names.insert(k->type_name).second) << k->type_name;
    EXPECT_THAT(ModuleKindFields(), ::testing::HasSubstr(f->name()));
  }
  EXPECT_EQ(FindModuleKind(proto::Module::KIND_NOT_SET), nullptr);
}

TEST(ModelTest, LinenNamesAndParameters) {
  auto m = Model::Build(FromJson<proto::ModelSpec>(R"({"input": {"shape": [8, 8, 1]},
      "body": {"sequential": {"layers": [
        {"conv2d": {"features": 4, "kernel_size": [3, 3]}},
        {"sequential": {"layers": [{"conv2d": {"features": 4, "kernel_size": [3, 3]}}]}},
        {"flatten": {}}, {"linear": {"features": 10}}, {"name": "head", "linear": {"features": 2}}
      ]}}})"),
                        1);
  ASSERT_TRUE(m.ok()) << m.status();
  std::vector<std::string> names;
  for (Param* p : (*m)->params()) {
    names.push_back(p->name);
  }
  EXPECT_THAT(names,
              ::testing::ElementsAre("Conv_0/kernel", "Conv_0/bias", "Sequential_0/Conv_0/kernel",
                                     "Sequential_0/Conv_0/bias", "Dense_0/kernel", "Dense_0/bias",
                                     "head/kernel", "head/bias"));
  EXPECT_EQ((*m)->output_shape(), (Shape{2}));
  EXPECT_EQ((*m)->num_parameters(), 3 * 3 * 4 + 4 + 3 * 3 * 4 * 4 + 4 + 256 * 10 + 10 + 22);
}

StepContext Ctx(Backend& b, QuantStatsMap& stats, bool update, QDotImpl impl) {
  StepContext ctx;
  ctx.backend = &b;
  ctx.stats = &stats;
  ctx.update_stats = update;
  ctx.impl = impl;
  return ctx;
}

TEST(ModelTest, QatOutputsEqualTheFakeQuantizedModel) {
  auto backend = testing::OnednnBackend();
  auto m = Model::Build(FromJson<proto::ModelSpec>(R"({"input": {"shape": [8, 8, 1]},
      "body": {"sequential": {"layers": [
        {"conv2d": {"features": 8, "kernel_size": [3, 3]}}, {"activation": {"kind": "RELU"}},
        {"flatten": {}}, {"linear": {"features": 32}}, {"activation": {"kind": "GELU"}},
        {"linear": {"features": 5}}]}}})"),
                        3);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE((*m)->SetRules(*CompiledRules::Create(testing::Int8Rules(false))).ok());
  Tensor x = Tensor::Empty(DType::kF32, {6, 8, 8, 1});
  for (int64_t i = 0; i < x.numel(); ++i) {
    x.data<float>()[i] = std::sin(0.37f * i);
  }
  QuantStatsMap stats;
  StepContext integer = Ctx(*backend, stats, false, QDotImpl::kInteger);
  StepContext fake = Ctx(*backend, stats, false, QDotImpl::kFakeQuant);
  auto yi = (*m)->root().Forward(integer, x);
  auto yf = (*m)->root().Forward(fake, x);
  ASSERT_TRUE(yi.ok() && yf.ok());
  double peak = 0, err = 0;
  for (int64_t i = 0; i < yi->numel(); ++i) {
    peak = std::max(peak, std::fabs(static_cast<double>(yf->data<float>()[i])));
    err =
        std::max(err, std::fabs(static_cast<double>(yi->data<float>()[i]) - yf->data<float>()[i]));
  }
  EXPECT_LT(err / peak, 1e-5);
  // And quantization is really on: a float model differs.
  ASSERT_TRUE((*m)->SetRules(nullptr).ok());
  auto yfloat = (*m)->root().Forward(integer, x);
  double diff = 0;
  for (int64_t i = 0; i < yi->numel(); ++i) {
    diff = std::max(
        diff, std::fabs(static_cast<double>(yi->data<float>()[i]) - yfloat->data<float>()[i]));
  }
  EXPECT_GT(diff / peak, 1e-4);
}

TEST(ModelTest, SrqStatisticsFollowTheGoldenVectors) {
  std::ifstream in("../shared/golden/numerics_cases.json");
  ASSERT_TRUE(in) << "tests run from the project root, with shared/ beside it";
  std::stringstream text;
  text << in.rdbuf();
  const auto doc = nlohmann::json::parse(text.str());
  int checked = 0;
  for (const auto& c : doc["cases"]) {
    if (c["op"] != "srq") {
      continue;
    }
    const std::string method = c["method"];
    auto spec = FromJson<proto::ModelSpec>(R"({"input": {"shape": [12]},
        "body": {"sequential": {"layers": [{"linear": {"features": 3}}]}}})");
    auto rules = FromJson<proto::RuleSet>(absl::StrCat(
        R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": true,
            "act_calibration_method": ")",
        method, R"("}]})"));
    auto trainer = Trainer::Create(spec, rules, {}, 1, testing::OnednnBackend());
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    for (const auto& b : c["batches"]) {
      std::vector<float> data = b["data"].get<std::vector<float>>();
      ASSERT_TRUE((*trainer)->CalibrateStep(Tensor::FromFloats({5, 12}, data)).ok());
    }
    const auto& stats = (*trainer)->quant_stats();
    auto it = stats.find({"Dense_0", "dot_general0_lhs"});
    ASSERT_NE(it, stats.end()) << method;
    EXPECT_EQ(it->second.count, c["expect"]["count"].get<int64_t>());
    const auto& sums = c["expect"]["sums"];
    if (it->second.symmetric) {
      EXPECT_NEAR(it->second.sum_of_absmax.data<float>()[0], sums["absmax"]["data"][0].get<float>(),
                  1e-6 * 30)
          << method;
    } else {
      EXPECT_EQ(it->second.sum_of_min.data<float>()[0], sums["min"]["data"][0].get<float>());
      EXPECT_EQ(it->second.sum_of_max.data<float>()[0], sums["max"]["data"][0].get<float>());
    }
    // The derived static scale: sum / count through the rule's calibration.
    auto report = (*trainer)->QuantStatsReport();
    ASSERT_EQ(report.size(), 1u);
    ASSERT_TRUE(report[0].params.ok()) << report[0].params.status();
    EXPECT_EQ(*report[0].qtype, QType::kInt8);
    EXPECT_EQ(report[0].params->symmetric(), method != "minmax");
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

Batch RandomBatch(int64_t n, uint32_t seed) {
  Batch b{Tensor::Empty(DType::kF32, {n, 12}), Tensor::Empty(DType::kS32, {n})};
  for (int64_t i = 0; i < b.inputs.numel(); ++i) {
    b.inputs.data<float>()[i] = std::cos(0.1f * i + seed);
  }
  for (int64_t i = 0; i < n; ++i) {
    b.targets.data<int32_t>()[i] = (i + seed) % 3;
  }
  return b;
}

// Padded tokens are masked out of attention also behind a class token (ViT / BERT-style
// classification over padded sequences): the class token's output cannot depend on what the pad
// id embeds to, while it does depend on every real token.
TEST(TrainerTest, PaddingIsMaskedBehindAClassToken) {
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(R"({"input": {"kind": "TOKENS",
      "shape": [5], "pad_id": 3}, "body": {"sequential": {"layers": [
      {"embedding": {"num_embeddings": 10, "features": 8}}, {"class_token": {}},
      {"position_embedding": {}},
      {"residual": {"body": {"sequential": {"layers": [
          {"layer_norm": {}}, {"attention": {"num_heads": 2}}]}}}},
      {"take_token": {"index": 0}}, {"linear": {"features": 3}}]}}})"),
                           proto::RuleSet(), {}, 5, MakeReferenceBackend());
  ASSERT_TRUE(t.ok()) << t.status();
  Tensor ids = Tensor::Empty(DType::kS32, {1, 5});
  const int32_t values[] = {1, 2, 3, 3, 3};  // two tokens, three pads
  std::memcpy(ids.raw(), values, sizeof(values));
  Tensor* table = nullptr;
  for (Param* p : (*t)->model().params()) {
    if (p->value.rank() == 2 && p->value.dim(0) == 10) table = &p->value;  // the embedding
  }
  ASSERT_NE(table, nullptr);
  auto logits_after = [&](int32_t id) {
    for (int j = 0; j < 8; ++j) table->data<float>()[id * 8 + j] += 0.5f;
    absl::StatusOr<Tensor> y = (*t)->Predict(ids);
    EXPECT_TRUE(y.ok()) << y.status();
    return y.ok() ? *std::move(y) : Tensor();
  };
  const Tensor before = logits_after(7);  // an id the batch does not use: no effect
  const Tensor pad_moved = logits_after(3);
  EXPECT_EQ(std::memcmp(before.raw(), pad_moved.raw(), before.nbytes()), 0);
  const Tensor token_moved = logits_after(2);
  EXPECT_NE(std::memcmp(before.raw(), token_moved.raw(), before.nbytes()), 0);
}

TEST(TrainerTest, SameSeedAndBatchesGiveBitIdenticalWeights) {
  auto spec = FromJson<proto::ModelSpec>(kMlp);
  auto opt = FromJson<proto::OptimizerConfig>(R"({"sgd": {"momentum": 0.9},
                                                  "schedule": {"learning_rate": 0.05}})");
  std::vector<std::map<std::string, Tensor>> states;
  for (int run = 0; run < 2; ++run) {
    auto t = Trainer::Create(spec, testing::Int8Rules(true), opt, 42, testing::OnednnBackend());
    ASSERT_TRUE(t.ok()) << t.status();
    for (int s = 0; s < 5; ++s) {
      ASSERT_TRUE((*t)->TrainStep(RandomBatch(16, s)).ok());
    }
    states.push_back((*t)->ExportState().value());
  }
  for (const auto& [name, tensor] : states[0]) {
    ASSERT_EQ(std::memcmp(tensor.raw(), states[1].at(name).raw(), tensor.nbytes()), 0) << name;
  }
}

TEST(TrainerTest, BadBatchesChangeNothing) {
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(kMlp), testing::Int8Rules(false), {}, 1,
                           testing::OnednnBackend());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->TrainStep(RandomBatch(4, 0)).ok());
  const auto before = (*t)->ExportState().value();
  Batch nan = RandomBatch(4, 1);
  nan.inputs.data<float>()[5] = NAN;
  Batch bad_label = RandomBatch(4, 1);
  bad_label.targets.data<int32_t>()[2] = 7;
  Batch bad_shape{Tensor::Zeros(DType::kF32, {4, 11}), Tensor::Zeros(DType::kS32, {4})};
  Batch bad_dtype{Tensor::Zeros(DType::kF32, {4, 12}), Tensor::Zeros(DType::kF32, {4})};
  for (const auto& [batch, part] :
       std::vector<std::pair<Batch, const char*>>{{nan, "element 5 is nan"},
                                                  {bad_label, "label 7"},
                                                  {bad_shape, "[4, 11]"},
                                                  {bad_dtype, "int32 labels"}}) {
    auto r = (*t)->TrainStep(batch);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(r.status().message(), HasSubstr(part));
  }
  EXPECT_EQ((*t)->step(), 1);
  const auto after = (*t)->ExportState().value();
  for (const auto& [name, tensor] : before) {
    EXPECT_EQ(std::memcmp(tensor.raw(), after.at(name).raw(), tensor.nbytes()), 0) << name;
  }
}

TEST(TrainerTest, FloatQatAndQtShareStateDicts) {
  auto spec = FromJson<proto::ModelSpec>(kMlp);
  auto fp = Trainer::Create(spec, {}, {}, 5, testing::OnednnBackend());
  ASSERT_TRUE(fp.ok());
  for (int s = 0; s < 3; ++s) {
    ASSERT_TRUE((*fp)->TrainStep(RandomBatch(8, s)).ok());
  }
  auto qt = Trainer::Create(spec, testing::Int8Rules(true), {}, 9, testing::OnednnBackend());
  ASSERT_TRUE(qt.ok());
  ASSERT_TRUE((*qt)->ImportState((*fp)->ExportState().value(), (*fp)->step()).ok());
  EXPECT_EQ((*qt)->step(), 3);
  auto exported = (*qt)->ExportState().value();
  const Tensor& w = exported.at("params/Dense_0/kernel");
  EXPECT_EQ(std::memcmp(w.raw(), (*fp)->ExportState().value().at("params/Dense_0/kernel").raw(),
                        w.nbytes()),
            0);
  auto r = (*qt)->TrainStep(RandomBatch(8, 7));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->step, 4);
  // A state dict that misses a parameter or has the wrong shape is refused, changing nothing.
  auto broken = (*fp)->ExportState().value();
  broken.erase("params/Dense_1/bias");
  auto s = (*qt)->ImportState(broken, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("params/Dense_1/bias"));
  broken = (*fp)->ExportState().value();
  broken["params/Dense_0/kernel"] = Tensor::Zeros(DType::kF32, {3, 3});
  EXPECT_THAT((*qt)->ImportState(broken, 0).message(), HasSubstr("[12, 16]"));
  broken = (*fp)->ExportState().value();
  Tensor count = Tensor::Empty(DType::kS32, {1});
  count.data<int32_t>()[0] = 2;
  broken["quant_stats/Dense_0/dot_general0_lhs/count"] = count;
  broken["quant_stats/Dense_0/dot_general0_lhs/sum_of_absmax"] = Tensor::Zeros(DType::kS32, {1, 1});
  EXPECT_THAT((*qt)->ImportState(broken, 0).message(), HasSubstr("finite f32"));
  EXPECT_EQ((*qt)->step(), 4);
}

TEST(TrainerTest, RulesChangeBetweenStepsAndBadRulesKeepTheOld) {
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(kMlp), {}, {}, 1, testing::OnednnBackend());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*t)->TrainStep(RandomBatch(8, 0)).ok());
  ASSERT_TRUE((*t)->SetRules(testing::Int8Rules(false)).ok());
  ASSERT_TRUE((*t)->TrainStep(RandomBatch(8, 1)).ok());
  auto bad = (*t)->SetRules(
      FromJson<proto::RuleSet>(R"({"rules": [{"module_path": "[", "weight_qtype": "int8"}]})"));
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->model().Ops()[0].first, 0);  // still planned with the int8 rule
  ASSERT_TRUE((*t)->SetRules(testing::Int8Rules(true)).ok());
  auto r = (*t)->TrainStep(RandomBatch(8, 2));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->step, 3);
}

TEST(TrainerTest, SrqOnAttentionEinsums) {
  auto spec = FromJson<proto::ModelSpec>(R"({"input": {"kind": "TOKENS", "shape": [6]},
      "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 10, "features": 8}},
        {"name": "attn", "attention": {"num_heads": 2, "causal": true}},
        {"linear": {"features": 10}}]}}})");
  auto rules = FromJson<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8", "act_static_scale": true, "tile_fraction": 0.5}]})");
  auto t = Trainer::Create(spec, rules, {}, 1, testing::OnednnBackend());
  ASSERT_TRUE(t.ok()) << t.status();
  Batch b{Tensor::Empty(DType::kS32, {3, 6}), Tensor::Empty(DType::kS32, {3, 6})};
  for (int64_t i = 0; i < 18; ++i) {
    b.inputs.data<int32_t>()[i] = i % 10;
    b.targets.data<int32_t>()[i] = (i + 1) % 10;
  }
  for (int s = 0; s < 2; ++s) {
    auto r = (*t)->TrainStep(b);
    ASSERT_TRUE(r.ok()) << r.status();
  }
  const auto& stats = (*t)->quant_stats();
  // (B, H, rows, cols) statistics averaged over the batch axis.
  const auto& lhs = stats.at({"attn", "einsum0_lhs"});
  const auto& rhs = stats.at({"attn", "einsum0_rhs"});
  EXPECT_EQ(lhs.count, 2);
  EXPECT_EQ(lhs.sum_of_absmax.shape(), (Shape{1, 2, 6, 2}));  // tile 0.5 of dh=4 → 2 tiles
  EXPECT_EQ(rhs.sum_of_absmax.shape(), (Shape{1, 2, 2, 6}));
  EXPECT_EQ(stats.at({"attn", "einsum1_rhs"}).sum_of_absmax.shape(), (Shape{1, 2, 2, 4}));
}

TEST(TrainerTest, StaticScalesNeedACount) {
  auto rules = FromJson<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8", "act_static_scale": true}]})");
  auto t =
      Trainer::Create(FromJson<proto::ModelSpec>(kMlp), rules, {}, 1, testing::OnednnBackend());
  ASSERT_TRUE(t.ok());
  // Evaluation does not update the statistics: they exist with count 0, and a static scale
  // cannot be derived from them yet.
  ASSERT_TRUE((*t)->EvalStep(RandomBatch(4, 0)).ok());
  auto report = (*t)->QuantStatsReport();
  ASSERT_EQ(report.size(), 2u);
  EXPECT_EQ(report[0].stat->count, 0);
  EXPECT_EQ(report[0].params.status().code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*t)->CalibrateStep(RandomBatch(4, 0).inputs).ok());
  report = (*t)->QuantStatsReport();
  EXPECT_EQ(report[0].stat->count, 1);
  EXPECT_TRUE(report[0].params.ok());
  // Switching the op back to float leaves the statistic without a static scale.
  ASSERT_TRUE((*t)->SetRules({}).ok());
  EXPECT_EQ((*t)->QuantStatsReport()[0].params.status().code(), absl::StatusCode::kNotFound);
  // With no act_static_scale rule left, a calibration pass collects nothing: an error that
  // says why, and the statistics stay as they were.
  const int64_t count = (*t)->quant_stats().begin()->second.count;
  const absl::Status calibrated = (*t)->CalibrateStep(RandomBatch(4, 0).inputs);
  EXPECT_EQ(calibrated.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(calibrated.message(), HasSubstr("act_static_scale"));
  EXPECT_EQ((*t)->quant_stats().begin()->second.count, count);
}

TEST(TrainerTest, OptimizerValidation) {
  for (const auto& [json, part] : std::vector<std::pair<const char*, const char*>>{
           {R"({"schedule": {"learning_rate": -1}})", "schedule.learning_rate"},
           {R"({"sgd": {"momentum": 1.5}})", "sgd.momentum"},
           {R"({"adamw": {"beta2": 1.0}})", "adamw.beta2"},
           {R"({"clip_global_norm": -3})", "clip_global_norm"}}) {
    auto t = Trainer::Create(FromJson<proto::ModelSpec>(kMlp), {},
                             FromJson<proto::OptimizerConfig>(json), 1, testing::OnednnBackend());
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << json;
    EXPECT_THAT(t.status().message(), HasSubstr(part));
  }
  proto::LrSchedule s = FromJson<proto::LrSchedule>(
      R"({"kind": "WARMUP_COSINE", "learning_rate": 1.0, "warmup_steps": 10,
          "decay_steps": 100, "end_learning_rate": 0.1})");
  EXPECT_FLOAT_EQ(LearningRate(s, 0), 0.1f);
  EXPECT_FLOAT_EQ(LearningRate(s, 9), 1.0f);
  EXPECT_NEAR(LearningRate(s, 60), 0.55f, 1e-5);
  EXPECT_FLOAT_EQ(LearningRate(s, 500), 0.1f);
}

}  // namespace
}  // namespace qtrain::engine
