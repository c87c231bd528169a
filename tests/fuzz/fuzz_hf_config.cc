// Fuzz target: a Hugging Face config.json (ImportWeights / CreateSession's architecture "hf",
// from wire bytes) expanded into a model spec. Any text must give a spec or a status, never a
// crash or an exception; a spec that builds within the small budget must run a forward pass.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "server/engine/architectures.h"
#include "tests/fuzz/fuzz_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qtrain;
  engine::proto::Architecture a;
  a.set_name("hf");
  a.set_hf_config(std::string(reinterpret_cast<const char*>(data), size));
  a.add_input_shape(4);
  absl::StatusOr<engine::proto::ModelSpec> spec = engine::ExpandArchitecture(a);
  if (!spec.ok()) return 0;
  std::unique_ptr<engine::Trainer> trainer =
      fuzz::SmallTrainer(*spec, engine::proto::RuleSet(), engine::proto::OptimizerConfig(), 1);
  if (trainer == nullptr) return 0;
  const Tensor ids = Tensor::Zeros(DType::kS32, {fuzz::kBatch, 4});
  if (!trainer->Predict(ids).ok()) std::abort();  // a model that built must run
  return 0;
}
