// SensitivityAnalysis and Trainer::EvaluateUnder: every evaluation matches a session that runs
// those rules itself, the session is left exactly as it was, and the mixed-precision search
// returns rules whose metrics are what it claims and fit the budget.
#include "server/engine/sensitivity.h"

#include <algorithm>
#include <cstring>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;

constexpr char kMlp[] = R"({"input": {"shape": [16]},
    "body": {"sequential": {"layers": [
      {"linear": {"features": 32}}, {"activation": {"kind": "RELU"}},
      {"linear": {"features": 24}}, {"activation": {"kind": "RELU"}},
      {"linear": {"features": 5}}]}},
    "loss": {"kind": "SOFTMAX_CROSS_ENTROPY"}})";

// Labels that the model can learn: the argmax of the first five inputs.
std::vector<Batch> Batches(int count, int size, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<Batch> out;
  for (int b = 0; b < count; ++b) {
    std::vector<float> x(size * 16);
    std::vector<int32_t> y(size);
    for (float& v : x) v = normal(rng);
    for (int i = 0; i < size; ++i) {
      int best = 0;
      for (int c = 1; c < 5; ++c) {
        if (x[i * 16 + c] > x[i * 16 + best]) best = c;
      }
      y[i] = best;
    }
    Tensor labels = Tensor::Empty(DType::kS32, {size});
    std::copy(y.begin(), y.end(), labels.span<int32_t>().begin());
    out.push_back({Tensor::FromFloats({size, 16}, x), std::move(labels)});
  }
  return out;
}

std::unique_ptr<Trainer> Trained(const proto::RuleSet& rules) {
  auto t = Trainer::Create(
      FromJson<proto::ModelSpec>(kMlp), rules,
      FromJson<proto::OptimizerConfig>(R"({"adamw": {}, "schedule": {"learning_rate": 0.01}})"), 7,
      testing::OnednnBackend());
  EXPECT_TRUE(t.ok()) << t.status();
  for (const Batch& b : Batches(40, 32, 1)) EXPECT_TRUE((*t)->TrainStep(b).ok());
  return std::move(*t);
}

// The metrics of a fresh session with `rules` and `from`'s state, through EvalStep.
EvalMetrics Direct(Trainer& from, const proto::RuleSet& rules, const std::vector<Batch>& data) {
  auto t = Trainer::Create(from.model().spec(), rules, from.optimizer_config(), 7,
                           testing::OnednnBackend());
  EXPECT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE((*t)->ImportState(from.ExportState().value(), from.step()).ok());
  EvalMetrics m;
  double loss = 0, acc = 0;
  for (const Batch& b : data) {
    auto r = (*t)->EvalStep(b);
    EXPECT_TRUE(r.ok()) << r.status();
    m.examples += r->examples;
    loss += r->loss * r->examples;
    acc += r->accuracy * r->examples;
  }
  m.loss = loss / m.examples;
  m.accuracy = acc / m.examples;
  return m;
}

void ExpectSame(const EvalMetrics& a, const EvalMetrics& b, const std::string& what) {
  EXPECT_DOUBLE_EQ(a.loss, b.loss) << what;
  EXPECT_DOUBLE_EQ(a.accuracy, b.accuracy) << what;
  EXPECT_EQ(a.examples, b.examples) << what;
}

// Runs the analysis to the end, checking each evaluation against a direct session.
SensitivityReport Analyze(Trainer& t, SensitivityOptions o, const std::vector<Batch>& data) {
  auto a = SensitivityAnalysis::Create(t, std::move(o));
  EXPECT_TRUE(a.ok()) << a.status();
  int steps = 0;
  while (std::optional<Evaluation> e = a->Next()) {
    auto m = t.EvaluateUnder(e->rules, data);
    EXPECT_TRUE(m.ok()) << m.status();
    ExpectSame(*m, Direct(t, e->rules, data), e->label);
    a->Record(*m);
    EXPECT_LE(a->done(), a->planned());
    EXPECT_LT(++steps, 100);
  }
  EXPECT_EQ(a->done(), a->planned());
  return a->Report();
}

TEST(SensitivityTest, EvaluateUnderLeavesTheSessionAsItWas) {
  auto t = Trained(FromJson<proto::RuleSet>(
      R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": true}]})"));
  const auto data = Batches(3, 20, 2);
  const auto before = t->ExportState().value();
  const auto ops = t->model().Ops();
  // Entropy on the same statistics would reset them; int4 changes every plan.
  auto m = t->EvaluateUnder(FromJson<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int4",
      "act_qtype": "int8", "act_static_scale": true, "act_calibration_method": "entropy"}]})"),
                            data);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->examples, 60);
  EXPECT_EQ(t->model().Ops(), ops);
  const auto after = t->ExportState().value();
  ASSERT_EQ(before.size(), after.size());
  for (const auto& [name, tensor] : before) {
    ASSERT_TRUE(after.count(name)) << name;
    ASSERT_EQ(tensor.nbytes(), after.at(name).nbytes()) << name;
    EXPECT_EQ(std::memcmp(tensor.raw(), after.at(name).raw(), tensor.nbytes()), 0) << name;
  }
  // A bad batch: the error names it, and the session is still as it was.
  auto bad = data;
  bad[1].inputs = Tensor::FromFloats({1, 3}, {1, 2, 3});
  auto r = t->EvaluateUnder(proto::RuleSet(), bad);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("batch 1"), std::string::npos) << r.status();
  EXPECT_EQ(t->model().Ops(), ops);
  EXPECT_EQ(t->EvaluateUnder(proto::RuleSet(), {}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Batches weigh what their loss counted: with ignore_index, the metrics over several batches
// equal those of one batch holding them all, and a batch with every label ignored adds nothing.
TEST(SensitivityTest, MetricsWeighWhatEachBatchCounted) {
  std::string spec = kMlp;
  spec.replace(spec.find(R"("SOFTMAX_CROSS_ENTROPY"})"), 24,
               R"("SOFTMAX_CROSS_ENTROPY", "ignore_index": -1})");
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(spec), proto::RuleSet(), {}, 7,
                           testing::OnednnBackend());
  ASSERT_TRUE(t.ok()) << t.status();
  std::vector<Batch> parts = {Batches(1, 10, 5)[0], Batches(1, 30, 6)[0], Batches(1, 4, 7)[0]};
  for (int i = 0; i < 25; ++i) parts[1].targets.data<int32_t>()[i] = -1;
  for (int i = 0; i < 4; ++i) parts[2].targets.data<int32_t>()[i] = -1;
  Batch all{Tensor::Empty(DType::kF32, {44, 16}), Tensor::Empty(DType::kS32, {44})};
  int64_t row = 0;
  for (const Batch& b : parts) {
    std::copy(b.inputs.span<float>().begin(), b.inputs.span<float>().end(),
              all.inputs.span<float>().begin() + row * 16);
    std::copy(b.targets.span<int32_t>().begin(), b.targets.span<int32_t>().end(),
              all.targets.span<int32_t>().begin() + row);
    row += b.inputs.dim(0);
  }
  auto whole = (*t)->EvalStep(all);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ(whole->counted, 15);
  auto split = (*t)->EvaluateUnder(proto::RuleSet(), parts);
  ASSERT_TRUE(split.ok()) << split.status();
  EXPECT_NEAR(split->loss, whole->loss, 1e-6);
  EXPECT_NEAR(split->accuracy, whole->accuracy, 1e-12);
  EXPECT_EQ(split->examples, 44);
}

TEST(SensitivityTest, OneAtATimeAndAllButOne) {
  auto t = Trained(proto::RuleSet());
  const auto data = Batches(4, 25, 3);
  SensitivityOptions o;
  o.rules = FromJson<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int2"}]})");
  const SensitivityReport r = Analyze(*t, o, data);
  ExpectSame(r.float_model, Direct(*t, proto::RuleSet(), data), "float");
  ExpectSame(r.quantized, Direct(*t, o.rules, data), "quantized");
  ASSERT_EQ(r.units.size(), 3u);
  std::set<std::string> modules;
  for (size_t i = 0; i < r.units.size(); ++i) {
    const UnitSensitivity& u = r.units[i];
    modules.insert(u.module_path);
    EXPECT_EQ(u.op_name, "dot_general");
    EXPECT_EQ(u.qtype, "int2");
    EXPECT_EQ(u.rule_index, 0);
    ASSERT_TRUE(u.only && u.all_but);
    if (i > 0) {  // most sensitive first: what leaving it float recovers
      EXPECT_GE(r.quantized.loss - r.units[i - 1].all_but->loss,
                r.quantized.loss - u.all_but->loss);
    }
  }
  EXPECT_EQ(modules, (std::set<std::string>{"Dense_0", "Dense_1", "Dense_2"}));
  EXPECT_FALSE(r.mixed_precision);
  // int2 weights hurt: all together, and the most sensitive unit alone.
  EXPECT_GT(r.quantized.loss, r.float_model.loss);
  EXPECT_GT(r.units[0].only->loss, r.float_model.loss);
}

TEST(SensitivityTest, MixedPrecisionFitsTheBudget) {
  auto t = Trained(proto::RuleSet());
  const auto data = Batches(4, 25, 4);
  SensitivityOptions o;
  o.rules = FromJson<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
      "act_qtype": "int8"}]})");
  o.qtypes = {"int2", "int8"};
  o.max_loss_increase = 0.02;
  o.all_but_one = false;
  const SensitivityReport r = Analyze(*t, o, data);
  ASSERT_TRUE(r.mixed_precision);
  const MixedPrecision& mp = *r.mixed_precision;
  EXPECT_TRUE(mp.within_budget);
  EXPECT_LE(mp.metrics.loss, r.float_model.loss * 1.02 + 1e-12);
  ExpectSame(mp.metrics, Direct(*t, mp.rules, data), "the returned rules");
  ASSERT_EQ(mp.choices.size(), 3u);
  int raised = 0;
  for (const UnitChoice& c : mp.choices) raised += c.qtype != "int2";
  EXPECT_GT(raised, 0) << "int2 everywhere is within 2% of float: the test proves nothing";
  // Each rule selects one module's op exactly, and float units have none.
  int float_units = 0;
  for (const UnitChoice& c : mp.choices) float_units += c.qtype == "float";
  EXPECT_EQ(mp.rules.rules_size(), 3 - float_units);
  for (const proto::QuantRule& rule : mp.rules.rules()) {
    EXPECT_EQ(rule.op_names_size(), 1);
    EXPECT_EQ(rule.act_qtype(), rule.weight_qtype());
  }

  // A budget int2 already meets changes nothing; one nothing but float meets ends all float.
  o.max_loss_increase = 1e6;
  EXPECT_EQ(Analyze(*t, o, data).mixed_precision->choices[0].qtype, "int2");
  o.max_loss_increase = 0;
  o.max_accuracy_drop = 1e-9;
  const SensitivityReport strict = Analyze(*t, o, data);
  ASSERT_TRUE(strict.mixed_precision);
  EXPECT_TRUE(strict.mixed_precision->within_budget);
  EXPECT_GE(strict.mixed_precision->metrics.accuracy, strict.float_model.accuracy - 1e-9);
}

// An attention module's einsums take activations on both sides: a weight-only rule leaves them
// float, so they are no units; with act_qtype they are one unit (both einsums).
TEST(SensitivityTest, EinsumsAreUnitsOnlyWithActivationQuantization) {
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(R"({"input": {"kind": "TOKENS",
      "shape": [8]}, "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 16, "features": 8}},
        {"name": "attn", "attention": {"num_heads": 2}}, {"linear": {"features": 16}}]}}})"),
                           proto::RuleSet(), {}, 1, testing::OnednnBackend());
  ASSERT_TRUE(t.ok()) << t.status();
  auto units = [&](const char* rules) {
    SensitivityOptions o;
    o.rules = FromJson<proto::RuleSet>(rules);
    auto a = SensitivityAnalysis::Create(**t, o);
    EXPECT_TRUE(a.ok()) << a.status();
    std::vector<std::string> out;
    for (const UnitSensitivity& u : a->Report().units) {
      out.push_back(u.module_path + " " + u.op_name);
    }
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(units(R"({"rules": [{"weight_qtype": "int8"}]})"),
            (std::vector<std::string>{"Dense_0 dot_general", "attn/key dot_general",
                                      "attn/out dot_general", "attn/query dot_general",
                                      "attn/value dot_general"}));
  EXPECT_EQ(units(R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})").size(), 6u);
}

TEST(SensitivityTest, BadOptionsNameTheField) {
  auto t = Trained(proto::RuleSet());
  auto error = [&](SensitivityOptions o) {
    return SensitivityAnalysis::Create(*t, std::move(o)).status();
  };
  SensitivityOptions o;
  o.rules = FromJson<proto::RuleSet>(R"({"rules": [{"weight_qtype": "int8"}]})");
  o.qtypes = {"int8", "int9"};
  o.max_loss_increase = 0.1;
  EXPECT_NE(error(o).message().find("qtypes[1]"), std::string::npos) << error(o);
  o.qtypes = {"int4", "float8_e4m3fn"};
  EXPECT_NE(error(o).message().find("qtypes[1]: \"float8_e4m3fn\" is not a signed integer"),
            std::string::npos)
      << error(o);
  o.qtypes = {"int4", "int4"};
  EXPECT_NE(error(o).message().find("is not wider"), std::string::npos) << error(o);
  o.qtypes.assign(9, "int8");
  EXPECT_NE(error(o).message().find("at most 8"), std::string::npos) << error(o);
  o.qtypes = {"int4"};
  o.max_loss_increase = -1;
  EXPECT_NE(error(o).message().find("max_loss_increase"), std::string::npos) << error(o);
  o.max_loss_increase = 0;
  EXPECT_NE(error(o).message().find("qtypes"), std::string::npos) << error(o);
  o.qtypes.clear();
  o.rules = FromJson<proto::RuleSet>(R"({"rules": [{"module_path": "nothing"}]})");
  EXPECT_EQ(error(o).code(), absl::StatusCode::kFailedPrecondition) << error(o);
  o.rules = FromJson<proto::RuleSet>(R"({"rules": [{"module_path": "("}]})");
  EXPECT_EQ(error(o).code(), absl::StatusCode::kInvalidArgument) << error(o);
}

}  // namespace
}  // namespace qtrain::engine
