// Fuzz target: the model-spec builder (CreateSession's model, from wire bytes). Every spec that
// builds and fits the budget must also run: a forward pass on a batch of zeros gives outputs of
// the shape the builder inferred, and one training step succeeds or fails with a status.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "tests/fuzz/fuzz_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qtrain;
  engine::proto::ModelSpec spec;
  if (!spec.ParseFromArray(data, static_cast<int>(size))) return 0;
  std::unique_ptr<engine::Trainer> trainer =
      fuzz::SmallTrainer(spec, engine::proto::RuleSet(), engine::proto::OptimizerConfig(), 1);
  if (trainer == nullptr) return 0;
  Shape in_shape = {fuzz::kBatch};
  in_shape.insert(in_shape.end(), spec.input().shape().begin(), spec.input().shape().end());
  const bool tokens = spec.input().kind() == engine::proto::InputSpec::TOKENS;
  const Tensor inputs = Tensor::Zeros(tokens ? DType::kS32 : DType::kF32, in_shape);
  absl::StatusOr<Tensor> out = trainer->Predict(inputs);
  if (!out.ok()) std::abort();  // a model that built must run on valid inputs
  Shape want = {fuzz::kBatch};
  want.insert(want.end(), trainer->model().output_shape().begin(),
              trainer->model().output_shape().end());
  if (out->shape() != want) std::abort();
  engine::Batch batch;
  batch.inputs = inputs;
  if (spec.loss().kind() == engine::proto::Loss::MSE) {
    batch.targets = Tensor::Zeros(DType::kF32, want);
  } else {
    Shape labels(want.begin(), want.end() - 1);
    batch.targets = Tensor::Zeros(DType::kS32, labels);
  }
  (void)trainer->TrainStep(batch).status();
  return 0;
}
