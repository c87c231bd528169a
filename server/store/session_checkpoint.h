// A training session as a checkpoint: the trainer's state dict as safetensors tensors, and its
// configuration (model spec, rules, optimizer as protobuf JSON) plus step and seed as string
// metadata, so that any safetensors reader can open it and qtrain can rebuild the session.
//
// Float, QAT and QT sessions load each other's checkpoints: only the parameters must match.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "server/engine/trainer.h"
#include "server/store/safetensors.h"

namespace qtrain::store {

inline constexpr char kFormatKey[] = "qtrain.format";
inline constexpr char kFormat[] = "qtrain-checkpoint-v1";

struct SessionConfig {
  engine::proto::ModelSpec spec;
  engine::proto::RuleSet rules;
  engine::proto::OptimizerConfig optimizer;
  uint64_t seed = 0;
  int64_t step = 0;
  int world_size = 1;   // ranks of a data-parallel session ("data_parallel_world_size")
  std::string backend;  // the backend it ran on ("backend"); "": the server's default
};

// The checkpoint of `trainer` (its configuration included). Trainer::ExportState's errors.
absl::StatusOr<SafetensorsFile> CheckpointFromTrainer(engine::Trainer& trainer);

// The configuration stored in a qtrain checkpoint. InvalidArgument naming the metadata key when
// it is missing or does not parse (e.g. a safetensors file written by another tool).
absl::StatusOr<SessionConfig> ConfigFromCheckpoint(const SafetensorsFile& file);

// Loads the checkpoint's state into `trainer` at the checkpoint's step ("step" metadata, 0 when
// absent). Errors of Trainer::ImportState; nothing changes on error.
absl::Status LoadCheckpoint(const SafetensorsFile& file, engine::Trainer& trainer);

}  // namespace qtrain::store
