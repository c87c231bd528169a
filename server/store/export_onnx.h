// ONNX export of a session (issue: calibration-as-a-service): the model as an ONNX graph (opset
// 17) in which every quantized op is wrapped in QuantizeLinear / DequantizeLinear pairs — the
// "QDQ" form ONNX Runtime and TensorRT fuse into integer kernels:
//   - weights: int8 initializers with their per-output-channel scales (per tensor with
//     disable_channelwise_axes) behind DequantizeLinear; int2..int7 weights travel as int8
//     values in their range;
//   - activations under act_static_scale: QuantizeLinear -> DequantizeLinear with the scales the
//     calibration gave, per tensor or per token (a 1-D scale along the one axis they vary on);
//     a Clip of the integers keeps qtypes narrower than int8 in their range. Dynamic activation
//     scales are not expressible in opset 17's symmetric int8 and stay float;
//   - attention's einsums quantize both operands (activations) the same way.
// Everything else is float. Images stay NHWC at the graph's edges ("input" (batch, ...) ->
// "logits"); convolutions and pools transpose to NCHW and back around themselves.
//
// Every module kind is supported. The graph passes ONNX's checker and its strict shape
// inference before it is returned.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "server/engine/trainer.h"

namespace qtrain::store {

// The serialized ModelProto. Errors: those of QuantizeWeightForExport and StaticInputScales
// (export_quantized.h) naming the layer; InvalidArgument for static scales that vary over more
// than one axis (per head and token); Internal when the checker refuses the graph (a bug of this
// exporter).
absl::StatusOr<std::string> ExportOnnx(engine::Trainer& trainer, const std::string& session_id);

}  // namespace qtrain::store
