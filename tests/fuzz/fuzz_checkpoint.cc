// Fuzz target: the checkpoint loader, as UploadCheckpoint and a restart use it — decode, read
// the configuration, build the session's trainer, load the tensors. The input is re-encoded with
// a valid checksum first, so that mutations reach the loader instead of stopping at the CRC.
// Models over the fuzzing memory budget are refused the way the server refuses them.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "server/engine/memory_budget.h"
#include "server/store/checkpoint_io.h"
#include "server/store/session_checkpoint.h"
#include "tests/fuzz/fuzz_limits.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace qtrain;
  absl::StatusOr<store::SafetensorsFile> parsed =
      store::ParseSafetensors(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!parsed.ok()) return 0;
  absl::StatusOr<store::SafetensorsFile> file =
      store::DecodeCheckpoint(store::EncodeCheckpoint(*std::move(parsed)));
  if (!file.ok()) std::abort();  // what EncodeCheckpoint writes always decodes
  absl::StatusOr<store::SessionConfig> config = store::ConfigFromCheckpoint(*file);
  if (!config.ok()) return 0;
  std::unique_ptr<engine::Trainer> trainer =
      fuzz::SmallTrainer(config->spec, config->rules, config->optimizer, config->seed);
  if (trainer == nullptr) return 0;
  const std::map<std::string, Tensor> before = trainer->ExportState().value();
  absl::Status loaded = store::LoadCheckpoint(*file, *trainer);
  if (!loaded.ok() && !fuzz::SameState(before, trainer->ExportState().value())) {
    std::abort();  // "nothing changes on error"
  }
  return 0;
}
