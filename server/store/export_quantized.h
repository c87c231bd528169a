// Int8 export of a session (issue: calibration-as-a-service) in the compressed-tensors layout
// that vLLM and Hugging Face read: for every linear layer whose rule quantizes its weights to
// int8, "<name>.weight" int8 (out, in), "<name>.weight_scale" f32 (out, 1) per output channel,
// and — with static activation scales (SRQ) — "<name>.input_scale" f32 (1); every other
// parameter in float with PyTorch's names and layouts (import_weights.h, so an imported model
// round-trips). The quantization_config (config.json's) travels in the file's metadata.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/trainer.h"
#include "server/store/safetensors.h"

namespace qtrain::store {

// A layer's weights as the forward pass quantizes them, for the exporters: `q` (s8, values in the
// qtype's range) in the kernel's own layout, `scale` per output channel (the kernel's last
// axis; one value with disable_channelwise). InvalidArgument naming `module` for tiles, an
// asymmetric calibration or a qtype other than int2..int8.
struct ExportWeight {
  Tensor q;
  Tensor scale;  // f32 (O) or (1)
  bool per_channel = true;
};
absl::StatusOr<ExportWeight> QuantizeWeightForExport(const engine::Rule& rule,
                                                     const std::string& module,
                                                     const Tensor& kernel);

// The static scales of an op's input (`stat` its quant_stats entry, or null) in the operand's
// Qwix shape with its reduced and batch axes kept as 1, or nullopt when the rule's activations
// are dynamic. FailedPrecondition without statistics (calibrate first); InvalidArgument for
// asymmetric static scales or a qtype other than int2..int8.
absl::StatusOr<std::optional<Tensor>> StaticInputScales(const engine::Rule& rule,
                                                        const std::string& module,
                                                        const SrqStat* stat);
// As StaticInputScales, for the one scale of a per-tensor calibration; InvalidArgument for
// per-token scales.
absl::StatusOr<std::optional<float>> StaticInputScale(const engine::Rule& rule,
                                                      const std::string& module,
                                                      const SrqStat* stat);

// The metadata key holding the quantization_config JSON.
inline constexpr char kQuantizationConfigKey[] = "quantization_config";

// Builds the export from the trainer's weights, rules and quant_stats; `module_map` renames
// modules as ImportWeights does. Errors name the layer: FailedPrecondition for static scales
// without statistics (calibrate first); InvalidArgument for what compressed-tensors cannot hold
// here — asymmetric or tiled weights, per-token static activation scales, activations in a qtype
// other than int8.
absl::StatusOr<SafetensorsFile> ExportCompressedTensors(
    engine::Trainer& trainer, const std::map<std::string, std::string>& module_map);

}  // namespace qtrain::store
