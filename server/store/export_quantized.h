// Export of a session in the compressed-tensors layout that vLLM and Hugging Face read. Every
// linear layer whose rule quantizes its weights (symmetric int2..int8, per channel, per tensor,
// or in tiles along the inputs = compressed-tensors' "group" strategy) is written as:
// - format "int-quantized" when every such layer is int8: "<name>.weight" int8 (out, in);
// - else "pack-quantized": "<name>.weight_packed" int32 (out, ceil(in * bits / 32)), values
//   offset by 2^(bits-1) into unsigned, element j of each word in bits j*bits.., and
//   "<name>.weight_shape" int32 [out, in];
// with "<name>.weight_scale" f32 (out, 1), (1) or (out, in / group), and — with static
// activation scales (SRQ) — "<name>.input_scale" f32 (1). Every other parameter stays float with
// PyTorch's names and layouts (import_weights.h, so an imported model round-trips). The
// quantization_config travels in the file's metadata, and — for a model built from a Hugging Face
// config — the whole config.json with it added (kHfConfigKey).
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
// axis; one value with disable_channelwise) or, for a tiled rank-2 kernel (in, out), per tile of
// `group` inputs and output channel. InvalidArgument naming `module` for tiles on anything but
// a channelwise rank-2 kernel, an asymmetric calibration or a qtype other than int2..int8.
struct ExportWeight {
  Tensor q;
  Tensor scale;  // f32 (O), (1), or (in / group, O) when tiled
  bool per_channel = true;
  int64_t group = 0;  // tile length along the inputs; 0: untiled
  int bits = 8;       // the qtype's width (int4: 4)
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

// The metadata keys holding the quantization_config JSON and the config.json to write beside the
// weights (present when the session's spec carries an hf_config).
inline constexpr char kQuantizationConfigKey[] = "quantization_config";
inline constexpr char kHfConfigKey[] = "config.json";

// Builds the export from the trainer's weights, rules and quant_stats; `module_map` renames
// modules as ImportWeights does. Errors name the layer: FailedPrecondition for static scales
// without statistics (calibrate first); InvalidArgument for what compressed-tensors cannot hold
// here — asymmetric weights, per-token static activation scales, activations in a qtype other than
// int8, a quantized tied head or GPT-2 Conv1D layer (compressed-tensors quantizes nn.Linear).
absl::StatusOr<SafetensorsFile> ExportCompressedTensors(
    engine::Trainer& trainer, const std::map<std::string, std::string>& module_map);

}  // namespace qtrain::store
