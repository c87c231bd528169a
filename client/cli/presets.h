// Built-in configurations so that a first session needs no JSON file: model presets (mlp, cnn,
// transformer-lm), rule presets (float, qat-int8, qt-int8, srq-int8, qat-int4; for language
// models w8a8, 8da4w, w4a16) and optimizer
// presets (adamw, sgd, momentum). InvalidArgument names an unknown preset and lists the known ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qtrain/v1/trainer_service.pb.h"

namespace qtrain::cli {

struct PresetOptions {
  int classes = 10;                                // mlp, cnn
  std::vector<int64_t> input_shape = {28, 28, 1};  // mlp, cnn
  int64_t seq_len = 64;                            // transformer-lm (byte vocabulary, 256)
};

absl::StatusOr<v1::ModelSpec> ModelPreset(const std::string& name, const PresetOptions& options);

// `name` is a preset, or JSON (inline or a file) for anything else.
absl::StatusOr<v1::RuleSet> RulesPreset(const std::string& name);
bool IsRulesPreset(const std::string& name);

// adamw, sgd or momentum (SGD with momentum 0.9) at a constant learning rate.
absl::StatusOr<v1::OptimizerConfig> OptimizerPreset(const std::string& name, double learning_rate);
bool IsOptimizerPreset(const std::string& name);

}  // namespace qtrain::cli
