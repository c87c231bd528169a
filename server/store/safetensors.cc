#include "server/store/safetensors.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace qtrain::store {
namespace {

using json = nlohmann::json;

const char* DTypeTag(DType d) {
  switch (d) {
    case DType::kF32:
      return "F32";
    case DType::kS32:
      return "I32";
    case DType::kS16:
      return "I16";
    case DType::kS8:
      return "I8";
    case DType::kU8:
      return "U8";
  }
  return "?";
}

// Bytes per element of the dtypes that are checked but not loaded (F16 and BF16 are widened to
// F32); 0 for any other tag.
constexpr char kOtherDTypes[] = "I64, U64, F64, U32, U16, BOOL, F8_E4M3, F8_E5M2";
int OtherDTypeSize(const std::string& tag) {
  static const std::pair<const char*, int> kSizes[] = {
      {"F16", 2}, {"BF16", 2}, {"I64", 8},  {"U64", 8},     {"F64", 8},
      {"U32", 4}, {"U16", 2},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  for (const auto& [name, size] : kSizes) {
    if (tag == name) return size;
  }
  return 0;
}

bool ParseDType(const std::string& tag, DType* out) {
  static const std::pair<const char*, DType> kTags[] = {{"F32", DType::kF32},
                                                        {"I32", DType::kS32},
                                                        {"I16", DType::kS16},
                                                        {"I8", DType::kS8},
                                                        {"U8", DType::kU8}};
  for (const auto& [name, d] : kTags) {
    if (tag == name) {
      *out = d;
      return true;
    }
  }
  return false;
}

absl::Status Corrupt(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("safetensors: ", what));
}

}  // namespace

std::string SerializeSafetensors(const SafetensorsFile& file) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    header[name] = {{"dtype", DTypeTag(t.dtype())},
                    {"shape", t.shape()},
                    {"data_offsets", {offset, offset + t.nbytes()}}};
    offset += t.nbytes();
  }
  if (!file.metadata.empty()) {
    header["__metadata__"] = file.metadata;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // align the data to 8 bytes
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  }
  out += text;
  out.reserve(out.size() + offset);
  for (const auto& [name, t] : file.tensors) {
    out.append(static_cast<const char*>(t.raw()), t.nbytes());
  }
  return out;
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes) {
  if (bytes.size() < 8) {
    return Corrupt(absl::StrCat("file of ", bytes.size(), " bytes is truncated"));
  }
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  }
  if (n > kMaxHeaderBytes || n > bytes.size() - 8) {
    return Corrupt(absl::StrCat("header length ", n, " exceeds the file (", bytes.size(),
                                " bytes) or the limit of ", kMaxHeaderBytes));
  }
  json header = json::parse(bytes.substr(8, n), nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return Corrupt("header is not a JSON object");
  }
  const absl::string_view data = bytes.substr(8 + n);

  SafetensorsFile file;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) {
        return Corrupt("__metadata__ is not an object");
      }
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) {
          return Corrupt(absl::StrCat("__metadata__.", m.key(), " is not a string"));
        }
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = absl::StrCat("tensor \"", name, "\"");
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets") || !v["dtype"].is_string() || !v["shape"].is_array() ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      return Corrupt(absl::StrCat(where, " needs dtype, shape and data_offsets [begin, end]"));
    }
    const std::string tag = v["dtype"].get<std::string>();
    DType dtype = DType::kF32;
    const int other_size = OtherDTypeSize(tag);
    if (!ParseDType(tag, &dtype) && other_size == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "safetensors: ", where, " has dtype ", tag,
          "; qtrain knows F32, F16, BF16, I32, I16, I8, U8 (and skips ", kOtherDTypes, ")"));
    }
    if (v["shape"].size() > kMaxTensorRank) {
      return Corrupt(absl::StrCat(where, " has rank ", v["shape"].size()));
    }
    Shape shape;
    uint64_t elements = 1;
    for (const json& d : v["shape"]) {
      if (!d.is_number_unsigned()) {
        return Corrupt(absl::StrCat(where, ": bad shape"));
      }
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && elements > (uint64_t{1} << 40) / dim) {
        return Corrupt(absl::StrCat(where, ": shape is too large"));
      }
      elements *= dim;
      shape.push_back(static_cast<int64_t>(dim));
    }
    const json& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
      return Corrupt(absl::StrCat(where, ": bad data_offsets"));
    }
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    const uint64_t size =
        elements * (other_size > 0 ? static_cast<uint64_t>(other_size) : DTypeSize(dtype));
    if (begin > end || end > data.size() || end - begin != size) {
      return Corrupt(absl::StrCat(where, ": data_offsets [", begin, ", ", end, "] do not hold ",
                                  size, " bytes inside ", data.size()));
    }
    ranges.emplace_back(begin, end);
    if (tag == "F16" || tag == "BF16") {
      Tensor t = Tensor::Empty(DType::kF32, shape);
      for (uint64_t i = 0; i < elements; ++i) {
        uint16_t bits;
        std::memcpy(&bits, data.data() + begin + 2 * i, 2);
        t.data<float>()[i] = tag == "F16" ? HalfToFloat(bits) : Bf16ToFloat(bits);
      }
      file.tensors.emplace(name, std::move(t));
      continue;
    }
    if (other_size > 0) {
      file.unloaded.emplace(name, tag);
      continue;
    }
    Tensor t = Tensor::Empty(dtype, shape);
    if (size > 0) {
      std::memcpy(t.raw(), data.data() + begin, size);
    }
    file.tensors.emplace(name, std::move(t));
  }
  // The data must be indexed entirely: sorted ranges tile [0, size) without holes or overlap.
  std::sort(ranges.begin(), ranges.end());
  uint64_t covered = 0;
  for (const auto& [begin, end] : ranges) {
    if (begin != covered) {
      return Corrupt("tensor data ranges overlap or leave holes");
    }
    covered = end;
  }
  if (covered != data.size()) {
    return Corrupt(absl::StrCat(data.size() - covered, " bytes after the last tensor"));
  }
  return file;
}

}  // namespace qtrain::store
