// Rule parsing, validation errors, first-match-wins, op_names, planning, unused rules.
#include "server/engine/rules.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/engine/model.h"
#include "server/engine/tests/test_models.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;
using ::testing::HasSubstr;

std::shared_ptr<const CompiledRules> Compile(const std::string& json) {
  auto r = CompiledRules::Create(FromJson<proto::RuleSet>(json));
  EXPECT_TRUE(r.ok()) << r.status();
  return r.ok() ? *r : nullptr;
}

struct MatchCase {
  const char* path;
  absl::string_view op;
  int expected_rule;  // -1: none
};

TEST(RulesTest, FirstMatchWinsWithFullMatchAndOpNames) {
  auto rules = Compile(R"({"rules": [
      {"module_path": "blocks_0/.*", "op_names": ["einsum"], "weight_qtype": "int8"},
      {"module_path": "blocks_\\d+/attn/.*", "weight_qtype": "int4"},
      {"module_path": "Dense", "weight_qtype": "int8"},
      {"module_path": ".*Dense_1", "weight_qtype": "int8"},
      {"weight_qtype": "int8", "op_names": ["conv_general_dilated"]}]})");
  ASSERT_NE(rules, nullptr);
  for (const MatchCase& c : std::vector<MatchCase>{
           {"blocks_0/attn", kEinsum, 0},
           {"blocks_0/attn/query", kDotGeneral, 1},
           {"blocks_7/attn/out", kDotGeneral, 1},
           {"blocks_7/attn", kEinsum, -1},  // "blocks_\d+/attn/.*" needs a child
           {"Dense_0", kDotGeneral, -1},    // full match: "Dense" does not match "Dense_0"
           {"head/Dense_1", kDotGeneral, 3},
           {"Conv_0", kConv, 4},
           {"Conv_0", kDotGeneral, -1}}) {
    const Rule* r = rules->Match(c.path, c.op);
    EXPECT_EQ(r ? r->index : -1, c.expected_rule) << c.path << " " << c.op;
  }
}

TEST(RulesTest, PlanFillsTheKernelConfig) {
  auto rules = Compile(R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int4",
      "act_calibration_method": "absmax,0.9", "bwd_qtype": "int8", "tile_fraction": 0.25,
      "bwd_stochastic_rounding": "uniform", "channelwise_noise_axes": {"axes": [0, 1]}}]})");
  auto plan = rules->Plan("Dense_0", OpShape{kDotGeneral, true, 512, 0});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->quantized());
  EXPECT_EQ(*plan->dot.lhs.qtype, QType::kInt4);
  EXPECT_EQ(*plan->dot.rhs.qtype, QType::kInt8);
  EXPECT_EQ(plan->dot.lhs.method.k, 0.9f);
  EXPECT_EQ(plan->dot.tile_size, 128);
  EXPECT_EQ(*plan->dot.bwd_qtype, QType::kInt8);
  EXPECT_EQ(plan->dot.stochastic_rounding, StochasticRounding::kUniform);
  EXPECT_TRUE(plan->dot.noise_varies_rows);
  EXPECT_TRUE(plan->dot.noise_varies_cols);
  // act×act einsums use act_qtype on both sides.
  auto einsum = rules->Plan("attn", OpShape{kEinsum, false, 64, 0});
  ASSERT_TRUE(einsum.ok());
  EXPECT_EQ(*einsum->dot.rhs.qtype, QType::kInt4);
}

// tile_weights_only (torchao's 8da4w): the weights are tiled, activations keep per-row scales,
// and an einsum (no weight operand) is not tiled at all, whatever its K.
TEST(RulesTest, TileWeightsOnlyLeavesActivationsPerToken) {
  auto rules = Compile(R"({"rules": [{"weight_qtype": "int4", "act_qtype": "int8",
      "tile_size": 32, "tile_weights_only": true}]})");
  auto plan = rules->Plan("Dense_0", OpShape{kDotGeneral, true, 96, 0});
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_EQ(plan->dot.tile_size, 32);
  EXPECT_TRUE(plan->dot.untiled_lhs);
  EXPECT_EQ(OperandReduceSpec(2, 1, plan->dot, /*lhs=*/true).tile_size, 0);
  EXPECT_EQ(OperandReduceSpec(2, 0, plan->dot).tile_size, 32);
  auto einsum = rules->Plan("attn", OpShape{kEinsum, false, 20, 0});  // 20 % 32 != 0
  ASSERT_TRUE(einsum.ok()) << einsum.status();
  EXPECT_EQ(einsum->dot.tile_size, 0);
  auto refused = CompiledRules::Create(FromJson<proto::RuleSet>(
      R"({"rules": [{"weight_qtype": "int4", "tile_weights_only": true}]})"));
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr("rules[0].tile_weights_only needs tile_size"));
}

TEST(RulesTest, WeightQtypeNoneLeavesTheOpInFloat) {
  auto rules = Compile(R"({"rules": [{"act_qtype": "int8"}]})");
  auto plan = rules->Plan("Dense_0", OpShape{kDotGeneral, true, 16, 0});
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->quantized());
  EXPECT_FALSE(plan->dot.lhs.qtype.has_value());
}

TEST(RulesTest, TilesMustDivideTheContractingAxis) {
  auto rules = Compile(R"({"rules": [{"weight_qtype": "int8", "tile_size": 48}]})");
  auto plan = rules->Plan("Dense_0", OpShape{kDotGeneral, true, 100, 0});
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(plan.status().message(), HasSubstr("K=100"));
  EXPECT_THAT(plan.status().message(), HasSubstr("Dense_0"));
}

struct BadRule {
  const char* json;
  const char* part;
};

class BadRulesTest : public ::testing::TestWithParam<BadRule> {};

TEST_P(BadRulesTest, IsInvalidArgumentNamingTheField) {
  auto r = CompiledRules::Create(FromJson<proto::RuleSet>(GetParam().json));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(r.status().message(), HasSubstr(GetParam().part));
}

INSTANTIATE_TEST_SUITE_P(
    Table, BadRulesTest,
    ::testing::Values(
        BadRule{R"({"rules": [{"module_path": "(unclosed", "weight_qtype": "int8"}]})",
                "rules[0].module_path \"(unclosed\" is not a valid RE2 regex"},
        BadRule{R"({"rules": [{}, {"weight_qtype": "int9"}]})", "rules[1].weight_qtype"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "act_calibration_method": "p99"}]})",
                "act_calibration_method"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "act_static_scale": true}]})",
                "act_static_scale needs act_qtype"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "op_names": ["matmul"]}]})",
                "unknown op \"matmul\""},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "tile_size": -4}]})", "tile_size -4"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "tile_fraction": 2}]})", "tile_fraction"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "bwd_stochastic_rounding": "x"}]})",
                "bwd_stochastic_rounding"},
        BadRule{R"({"rules": [{"weight_qtype": "uint8",
                               "weight_calibration_method": "minmax"}]})",
                "symmetric only"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "bwd_qtype": "float8_e4m3fn",
                               "bwd_stochastic_rounding": "uniform"}]})",
                "integer bwd_qtype"},
        // Rounding of gradients that are never quantized would change nothing (issue 10).
        BadRule{R"({"rules": [{"weight_qtype": "int8", "bwd_stochastic_rounding": "uniform"}]})",
                "bwd_stochastic_rounding needs bwd_qtype"},
        // Found by fuzz_rules: repeated axes were accepted and failed every forward pass.
        BadRule{R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
                               "act_static_scale": true, "act_batch_axes": {"axes": [0, 0]}}]})",
                "rules[0].act_batch_axes: axis 0 is repeated"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "channelwise_noise_axes": {"axes": [9]}}]})",
                "rules[0].channelwise_noise_axes: axis 9 is outside [-8, 8)"},
        // numerics.md §9: the extensions' arguments and where entropy may be used.
        BadRule{R"({"rules": [{"weight_qtype": "int8",
                               "weight_calibration_method": "percentile,101"}]})",
                "rules[0].weight_calibration_method"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
                               "act_calibration_method": "mse,0"}]})",
                "rules[0].act_calibration_method"},
        BadRule{R"({"rules": [{"weight_qtype": "int8",
                               "weight_calibration_method": "entropy"}]})",
                "entropy calibrates activations only"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "bwd_qtype": "int8",
                               "bwd_calibration_method": "entropy"}]})",
                "rules[0].bwd_calibration_method"},
        BadRule{R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
                               "act_calibration_method": "entropy"}]})",
                "needs act_static_scale: true"}));

TEST(RulesTest, RegexesAreLinearTimeOnHostilePatterns) {
  // A backtracking engine takes exponential time here; RE2 does not.
  auto rules = Compile(R"({"rules": [{"module_path": "(a+)+$", "weight_qtype": "int8"}]})");
  const std::string path(5000, 'a');
  EXPECT_EQ(rules->Match(path + "b", kDotGeneral), nullptr);
}

TEST(RulesTest, ModelReportsOpsAndUnusedRules) {
  auto spec = testing::FromJson<proto::ModelSpec>(R"({
      "input": {"shape": [8]},
      "body": {"sequential": {"layers": [
          {"linear": {"features": 16}}, {"activation": {"kind": "RELU"}},
          {"name": "head", "linear": {"features": 4}}]}}})");
  auto model = Model::Build(spec, 1);
  ASSERT_TRUE(model.ok()) << model.status();
  auto rules = Compile(R"({"rules": [{"module_path": "head", "weight_qtype": "int8"},
                                     {"module_path": "nothing", "weight_qtype": "int8"},
                                     {"module_path": "Dense_.*", "weight_qtype": "int8"}]})");
  ASSERT_TRUE((*model)->SetRules(rules).ok());
  auto ops = (*model)->Ops();
  ASSERT_EQ(ops.size(), 2u);
  EXPECT_EQ(ops[0], (std::pair<int, std::string>{2, "Dense_0:dot_general0"}));
  EXPECT_EQ(ops[1], (std::pair<int, std::string>{0, "head:dot_general0"}));
  EXPECT_EQ((*model)->UnusedRules(), std::vector<int>{1});
  // A failing plan keeps the old one.
  auto bad = Compile(R"({"rules": [{"weight_qtype": "int8", "tile_size": 5}]})");
  EXPECT_FALSE((*model)->SetRules(bad).ok());
  EXPECT_EQ((*model)->Ops()[1].first, 0);
}

}  // namespace
}  // namespace qtrain::engine
