// Every case of ../shared/golden/numerics_cases.json and of numerics_ext_cases.json (§9:
// percentile, mse, entropy), on both backends, within numerics.md §8.
#include <gtest/gtest.h>

#include "kernels/backend/backend.h"
#include "tools/conformance/golden_runner.h"

namespace qtrain {
namespace {

constexpr char kGoldenPath[] = "../shared/golden/numerics_cases.json";
constexpr char kExtGoldenPath[] = "../shared/golden/numerics_ext_cases.json";

void ExpectAllPass(Backend& backend) {
  for (const auto& [path, at_least] :
       {std::pair{kGoldenPath, 39u}, std::pair{kExtGoldenPath, 15u}}) {
    auto results = conformance::RunGoldenFile(path, backend);
    ASSERT_TRUE(results.ok()) << results.status()
                              << " (tests run from the project root; shared/ sits beside it)";
    ASSERT_GE(results->size(), at_least) << path;
    for (const auto& r : *results) {
      EXPECT_TRUE(r.passed) << path << ": " << r.name << ": " << r.message;
    }
  }
}

TEST(GoldenTest, OnednnBackendPassesEveryCase) {
  auto backend = MakeOnednnBackend();
  ASSERT_TRUE(backend.ok()) << backend.status();
  ExpectAllPass(**backend);
}

TEST(GoldenTest, ReferenceBackendPassesEveryCase) {
  auto backend = MakeReferenceBackend();
  ExpectAllPass(*backend);
}

TEST(GoldenTest, MalformedFilesAreErrorsNotCrashes) {
  auto backend = MakeReferenceBackend();
  EXPECT_EQ(conformance::RunGoldenText("{", *backend).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      conformance::RunGoldenText(R"({"format": "other", "cases": []})", *backend).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(conformance::RunGoldenFile("/nonexistent.json", *backend).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(GoldenTest, BadCasesFailWithAReason) {
  auto backend = MakeReferenceBackend();
  auto results = conformance::RunGoldenText(
      R"({"format": "qtrain-golden-v1", "cases": [
          {"name": "a", "op": "convert", "qtype": "int9",
           "x": {"dtype": "f32", "shape": [1], "data": [1.0]},
           "expect": {"q": {"dtype": "i32", "shape": [1], "data": [1]}}},
          {"name": "b", "op": "nosuchop"},
          {"name": "c", "op": "convert", "qtype": "int8",
           "x": {"dtype": "f32", "shape": [2], "data": [1.0]}, "expect": {}},
          {"name": "d", "op": "convert", "qtype": "int8",
           "x": {"dtype": "f32", "shape": [1], "data": [2.5]},
           "expect": {"q": {"dtype": "i32", "shape": [1], "data": [3]}}}]})",
      *backend);
  ASSERT_TRUE(results.ok()) << results.status();
  ASSERT_EQ(results->size(), 4u);
  EXPECT_FALSE((*results)[0].passed);
  EXPECT_NE((*results)[0].message.find("int9"), std::string::npos);
  EXPECT_FALSE((*results)[1].passed);
  EXPECT_NE((*results)[1].message.find("nosuchop"), std::string::npos);
  EXPECT_FALSE((*results)[2].passed);
  EXPECT_FALSE((*results)[3].passed);  // round-half-even gives 2, not 3
  EXPECT_NE((*results)[3].message.find("expected 3"), std::string::npos);
}

}  // namespace
}  // namespace qtrain
