// safetensors (https://github.com/huggingface/safetensors format): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}},
// then the raw little-endian tensor bytes. Any safetensors reader opens qtrain's checkpoints.
//
// Pure functions; thread-safe. Parsing treats its input as untrusted.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "kernels/tensor.h"

namespace qtrain::store {

struct SafetensorsFile {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
  // Tensors of a dtype qtrain does not load (I64, F64, BOOL, U16, U32, U64, F8_*), checked and
  // skipped: name -> dtype tag. PyTorch state dicts hold BatchNorm's num_batches_tracked as I64.
  std::map<std::string, std::string> unloaded;
};

// Serializes tensors (f32, s32, s16, s8, u8) in name order, 8-byte aligned header.
std::string SerializeSafetensors(const SafetensorsFile& file);

// Limits applied while parsing (a hostile header cannot make us allocate more).
inline constexpr uint64_t kMaxHeaderBytes = 100u << 20;
inline constexpr int kMaxTensorRank = 8;

// Parses and validates: header length within the file and kMaxHeaderBytes, valid JSON object,
// known dtypes, shapes of non-negative dims, offsets that match dtype × shape, lie inside the
// data and do not overlap, no trailing bytes, string metadata. F32, I32, I16, I8 and U8 tensors
// load as they are; F16 and BF16 load widened to F32 (exactly); the other safetensors dtypes go
// to `unloaded`. DataLoss for truncated or corrupt bytes, InvalidArgument for an unknown dtype;
// messages name the tensor and the field.
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes);

}  // namespace qtrain::store
