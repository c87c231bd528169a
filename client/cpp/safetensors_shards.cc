#include "safetensors_shards.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace qtrain::client {
namespace {

using google::protobuf::Struct;
using google::protobuf::Value;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // as the server's parser

absl::StatusOr<Struct> ParseJson(const std::string& text, const std::string& what) {
  Struct s;
  if (!google::protobuf::util::JsonStringToMessage(text, &s).ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is not a JSON object"));
  }
  return s;
}

// A JSON string literal of `s`.
std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// A non-negative integer JSON number below 2^53 (exact as a double).
bool AsCount(const Value& v, uint64_t* out) {
  if (v.kind_case() != Value::kNumberValue) return false;
  const double d = v.number_value();
  if (!(d >= 0 && d < 9007199254740992.0) || d != static_cast<double>(static_cast<uint64_t>(d))) {
    return false;
  }
  *out = static_cast<uint64_t>(d);
  return true;
}

}  // namespace

absl::StatusOr<MergedSafetensors> MergeShards(const std::string& dir) {
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::ifstream index_file(index_path);
  if (!index_file) return absl::NotFoundError(absl::StrCat("cannot read ", index_path));
  std::stringstream index_text;
  index_text << index_file.rdbuf();
  absl::StatusOr<Struct> index = ParseJson(index_text.str(), index_path);
  if (!index.ok()) return index.status();
  auto map = index->fields().find("weight_map");
  if (map == index->fields().end() || map->second.kind_case() != Value::kStructValue ||
      map->second.struct_value().fields().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(index_path, ": no weight_map"));
  }
  std::set<std::string> shards;
  for (const auto& [name, file] : map->second.struct_value().fields()) {
    if (file.kind_case() != Value::kStringValue || file.string_value().empty() ||
        file.string_value().find('/') != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(index_path, ": weight_map[", name, "] is not a file name in ", dir));
    }
    shards.insert(file.string_value());
  }
  MergedSafetensors out;
  std::map<std::string, std::string> entries;  // tensor -> its merged header entry
  uint64_t base = 0;
  for (const std::string& shard : shards) {
    const std::string path = dir + "/" + shard;
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
    const uint64_t size = static_cast<uint64_t>(in.tellg());
    unsigned char len_bytes[8] = {};
    in.seekg(0);
    in.read(reinterpret_cast<char*>(len_bytes), 8);
    uint64_t n = 0;
    for (int b = 7; b >= 0; --b) n = (n << 8) | len_bytes[b];
    if (!in || n > kMaxHeaderBytes || n > size - 8) {
      return absl::InvalidArgumentError(absl::StrCat(path, " is not a safetensors file"));
    }
    std::string text(n, '\0');
    in.read(text.data(), static_cast<std::streamsize>(n));
    absl::StatusOr<Struct> header = ParseJson(text, path + "'s header");
    if (!header.ok()) return header.status();
    const uint64_t data = size - 8 - n;
    for (const auto& [name, entry] : header->fields()) {
      if (name == "__metadata__") continue;
      const auto& f = entry.struct_value().fields();
      auto dtype = f.find("dtype"), shape = f.find("shape"), offsets = f.find("data_offsets");
      uint64_t begin = 0, end = 0;
      const bool ok = entry.kind_case() == Value::kStructValue && dtype != f.end() &&
                      dtype->second.kind_case() == Value::kStringValue && shape != f.end() &&
                      shape->second.kind_case() == Value::kListValue && offsets != f.end() &&
                      offsets->second.list_value().values_size() == 2 &&
                      AsCount(offsets->second.list_value().values(0), &begin) &&
                      AsCount(offsets->second.list_value().values(1), &end) && begin <= end &&
                      end <= data;
      if (!ok)
        return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", name, " is malformed"));
      std::string dims;
      for (const Value& d : shape->second.list_value().values()) {
        uint64_t v = 0;
        if (!AsCount(d, &v)) {
          return absl::InvalidArgumentError(absl::StrCat(path, ": tensor ", name, "'s shape"));
        }
        absl::StrAppend(&dims, dims.empty() ? "" : ",", v);
      }
      if (entries.count(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": tensor ", name, " is in two shards"));
      }
      entries[name] =
          absl::StrCat("{\"dtype\":", Quote(dtype->second.string_value()), ",\"shape\":[", dims,
                       "],\"data_offsets\":[", base + begin, ",", base + end, "]}");
    }
    out.pieces.push_back({path, 8 + n, data});
    base += data;
  }
  for (const auto& [name, file] : map->second.struct_value().fields()) {
    if (!entries.count(name)) {
      return absl::InvalidArgumentError(absl::StrCat(index_path, ": the weight_map lists ", name,
                                                     ", which ", file.string_value(), " lacks"));
    }
  }
  std::string json = "{";
  for (const auto& [name, entry] : entries) {
    absl::StrAppend(&json, json.size() > 1 ? "," : "", Quote(name), ":", entry);
  }
  json += "}";
  json.append((8 - json.size() % 8) % 8, ' ');
  out.header.resize(8);
  for (int b = 0; b < 8; ++b) out.header[b] = static_cast<char>((json.size() >> (8 * b)) & 0xff);
  out.header += json;
  return out;
}

}  // namespace qtrain::client
