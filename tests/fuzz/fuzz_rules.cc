// Fuzz target: the rules parser and planner (CreateSession / UpdateRules, from wire bytes),
// applied to a small MLP, a CNN and an attention block. Rules that are accepted must do what
// they say: forward, a training step and calibration run or fail with a status, never crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "server/engine/rules.h"
#include "tests/fuzz/fuzz_limits.h"

namespace {

using namespace qtrain;

engine::proto::ModelSpec Spec(const char* json) {
  engine::proto::ModelSpec spec;
  if (!google::protobuf::util::JsonStringToMessage(json, &spec).ok()) std::abort();
  return spec;
}

const char* const kModels[] = {
    R"({"input": {"shape": [16]}, "body": {"sequential": {"layers": [
        {"linear": {"features": 32}}, {"activation": {"kind": "RELU"}},
        {"linear": {"features": 4}}]}}})",
    R"({"input": {"shape": [8, 8, 1]}, "body": {"sequential": {"layers": [
        {"conv2d": {"features": 4, "kernel_size": [3, 3]}}, {"activation": {"kind": "RELU"}},
        {"pool": {"kind": "MAX", "window": [2, 2]}}, {"flatten": {}},
        {"linear": {"features": 4}}]}}})",
    R"({"input": {"shape": [8], "kind": "TOKENS"}, "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": 16, "features": 16}},
        {"attention": {"num_heads": 2, "causal": true}}, {"linear": {"features": 16}}]}}})",
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  engine::proto::RuleSet rules;
  if (size < 1 || !rules.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  if (!engine::CompiledRules::Create(rules).ok()) return 0;
  const engine::proto::ModelSpec spec = Spec(kModels[data[0] % 3]);
  std::unique_ptr<engine::Trainer> trainer =
      fuzz::SmallTrainer(spec, engine::proto::RuleSet(), engine::proto::OptimizerConfig(), 1);
  if (trainer == nullptr) std::abort();
  if (!trainer->SetRules(rules).ok()) return 0;  // e.g. a tile that divides no op
  Shape in_shape = {fuzz::kBatch};
  in_shape.insert(in_shape.end(), spec.input().shape().begin(), spec.input().shape().end());
  const bool tokens = spec.input().kind() == engine::proto::InputSpec::TOKENS;
  Tensor inputs = Tensor::Zeros(tokens ? DType::kS32 : DType::kF32, in_shape);
  if (!tokens) {
    for (int64_t i = 0; i < inputs.numel(); ++i) inputs.data<float>()[i] = 0.25f * (i % 7) - 0.5f;
  }
  engine::Batch batch;
  batch.inputs = inputs;
  Shape labels = {fuzz::kBatch};
  if (tokens) labels.push_back(spec.input().shape(0));
  batch.targets = Tensor::Zeros(DType::kS32, labels);
  (void)trainer->CalibrateStep(inputs);
  (void)trainer->TrainStep(batch).status();
  // Accepted rules must run. The one error allowed is Qwix's own trace-time error: an
  // act_batch_axes axis that the op's operand does not have (its rank is known only there).
  absl::Status s = trainer->Predict(inputs).status();
  if (!s.ok() && !absl::StartsWith(s.message(), "act_batch_axes: axis ")) {
    std::fprintf(stderr, "model %d, rules %s: %s\n", data[0] % 3, rules.DebugString().c_str(),
                 s.ToString().c_str());
    std::abort();
  }
  return 0;
}
