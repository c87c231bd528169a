// Token ids for language models: pre-tokenized .npy and nanoGPT-style .bin files, and the cutting
// of an id stream into training windows or of padded per-line sequences.
#include <algorithm>
#include <cstring>
#include <limits>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/data/dataset.h"

namespace qtrain::client {
namespace {

// Little-endian unsigned or signed integers of `size` bytes at `p`, as int32 ids.
absl::StatusOr<std::vector<int32_t>> DecodeIds(const std::string& path, const char* p, size_t count,
                                               size_t size, bool is_signed) {
  std::vector<int32_t> ids(count);
  for (size_t i = 0; i < count; ++i) {
    uint64_t u = 0;
    for (size_t b = 0; b < size; ++b)
      u |= uint64_t{static_cast<unsigned char>(p[i * size + b])} << (8 * b);
    int64_t v = static_cast<int64_t>(u);
    if (is_signed && size < 8 && (u >> (8 * size - 1)) != 0) v -= int64_t{1} << (8 * size);
    if (v < 0 || v > std::numeric_limits<int32_t>::max()) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token id ", v, " at index ", i, " is outside [0, 2^31)"));
    }
    ids[i] = static_cast<int32_t>(v);
  }
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> ReadNpyTokens(const std::string& path) {
  auto raw = ReadMaybeGzip(path);
  if (!raw.ok()) return raw.status();
  const std::string& s = *raw;
  if (s.size() < 10 || s.compare(0, 6, "\x93NUMPY") != 0) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not a .npy file"));
  }
  const int major = static_cast<unsigned char>(s[6]);
  const size_t len_bytes = major == 1 ? 2 : 4;
  if (major < 1 || major > 3 || s.size() < 8 + len_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unknown .npy version ", major));
  }
  size_t header_len = 0;
  for (size_t b = 0; b < len_bytes; ++b) {
    header_len |= size_t{static_cast<unsigned char>(s[8 + b])} << (8 * b);
  }
  const size_t start = 8 + len_bytes + header_len;
  if (start > s.size()) return absl::InvalidArgumentError(absl::StrCat(path, " is truncated"));
  const std::string header = s.substr(8 + len_bytes, header_len);
  // {'descr': '<u2', 'fortran_order': False, 'shape': (1000,), }
  const auto field = [&](const std::string& key) -> std::string {
    const size_t at = header.find("'" + key + "'");
    if (at == std::string::npos) return "";
    const size_t colon = header.find(':', at);
    if (colon == std::string::npos) return "";
    std::string rest = header.substr(colon + 1);
    const size_t end = key == "shape" ? rest.find(')') + 1 : rest.find_first_of(",}");
    return std::string(absl::StripAsciiWhitespace(rest.substr(0, end)));
  };
  const std::string descr = field("descr"), shape = field("shape");
  static const std::map<std::string, std::pair<size_t, bool>> kDtypes = {
      {"'|u1'", {1, false}}, {"'<u2'", {2, false}}, {"'<u4'", {4, false}}, {"'<u8'", {8, false}},
      {"'|i1'", {1, true}},  {"'<i2'", {2, true}},  {"'<i4'", {4, true}},  {"'<i8'", {8, true}}};
  auto dtype = kDtypes.find(descr);
  if (dtype == kDtypes.end()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": dtype ", descr, " is not a little-endian integer type (uint16, int32, ...)"));
  }
  if (field("fortran_order") != "False") {
    return absl::InvalidArgumentError(absl::StrCat(path, ": Fortran-order arrays are not read"));
  }
  std::vector<std::string> dims =
      absl::StrSplit(absl::StripSuffix(absl::StripPrefix(shape, "("), ")"), ',', absl::SkipEmpty());
  size_t count = 0;
  if (dims.size() != 1 || !absl::SimpleAtoi(absl::StripAsciiWhitespace(dims[0]), &count)) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": shape ", shape, " is not 1-D (a stream of token ids)"));
  }
  const size_t size = dtype->second.first;
  if (s.size() - start != count * size) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", s.size() - start, " data bytes, the header says ", count * size));
  }
  return DecodeIds(path, s.data() + start, count, size, dtype->second.second);
}

absl::StatusOr<std::vector<int32_t>> ReadBinTokens(const std::string& path,
                                                   const std::string& dtype) {
  const std::string d = dtype.empty() ? "uint16" : dtype;
  if (d != "uint16" && d != "uint32") {
    return absl::InvalidArgumentError(
        absl::StrCat("--token_dtype=", d, " is not one of uint16, uint32"));
  }
  auto raw = ReadMaybeGzip(path);
  if (!raw.ok()) return raw.status();
  const size_t size = d == "uint16" ? 2 : 4;
  if (raw->size() % size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " has ", raw->size(), " bytes, not a whole number of ", d, " ids"));
  }
  return DecodeIds(path, raw->data(), raw->size() / size, size, false);
}

absl::StatusOr<Dataset> TokenWindows(const std::vector<int32_t>& ids, const DataOptions& o,
                                     const std::string& what) {
  if (o.seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--seq_len=", o.seq_len, " must be >= 1"));
  }
  const auto n = static_cast<int64_t>(ids.size());
  // Next-token labels read one id past each window.
  const int64_t need = o.labels_are_inputs ? o.seq_len : o.seq_len + 1;
  int64_t examples = n >= need ? (o.labels_are_inputs ? n : n - 1) / o.seq_len : 0;
  if (examples == 0) {
    return absl::InvalidArgumentError(absl::StrCat(o.path, " has ", n, " tokens, fewer than ",
                                                   "--seq_len=", o.seq_len,
                                                   o.labels_are_inputs ? "" : " + 1"));
  }
  if (o.limit > 0 && o.limit < examples) examples = o.limit;
  Dataset d;
  d.tokens = true;
  d.example_shape = {o.seq_len};
  d.labels_per_example = o.seq_len;
  const auto tokens = static_cast<size_t>(examples * o.seq_len);
  d.token_ids.assign(ids.begin(), ids.begin() + static_cast<int64_t>(tokens));
  const size_t shift = o.labels_are_inputs ? 0 : 1;
  d.labels.assign(ids.begin() + static_cast<int64_t>(shift),
                  ids.begin() + static_cast<int64_t>(tokens + shift));
  d.description = absl::StrCat(examples, " sequences of ", o.seq_len, " ", what);
  return d;
}

absl::StatusOr<Dataset> PaddedSequences(const std::vector<std::vector<int32_t>>& sequences,
                                        const DataOptions& o, const std::string& what) {
  if (o.seq_len < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--seq_len=", o.seq_len, " must be >= 1"));
  }
  if (!o.pad_id.has_value()) {
    return absl::InvalidArgumentError(
        "--sequences=lines pads sequences, so the session needs a pad id (input.pad_id: create "
        "or import it with --arch_options=pad_id=N)");
  }
  if (sequences.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(o.path, " has no sequence (no non-empty line)"));
  }
  auto examples = static_cast<int64_t>(sequences.size());
  if (o.limit > 0 && o.limit < examples) examples = o.limit;
  const int32_t pad = *o.pad_id;
  Dataset d;
  d.tokens = true;
  d.example_shape = {o.seq_len};
  d.labels_per_example = o.seq_len;
  d.token_ids.assign(static_cast<size_t>(examples * o.seq_len), pad);
  d.labels.assign(d.token_ids.size(), pad);
  int64_t cut = 0, tokens = 0;
  for (int64_t e = 0; e < examples; ++e) {
    const std::vector<int32_t>& ids = sequences[static_cast<size_t>(e)];
    const int64_t n = std::min<int64_t>(static_cast<int64_t>(ids.size()), o.seq_len);
    cut += static_cast<int64_t>(ids.size()) > o.seq_len;
    tokens += n;
    int32_t* in = d.token_ids.data() + e * o.seq_len;
    int32_t* label = d.labels.data() + e * o.seq_len;
    for (int64_t t = 0; t < n; ++t) {
      in[t] = ids[static_cast<size_t>(t)];
      // Next-id labels read one past the window where the line goes on; pad ends it.
      const auto next = static_cast<size_t>(t + 1);
      label[t] = o.labels_are_inputs ? in[t] : (next < ids.size() ? ids[next] : pad);
    }
  }
  d.description =
      absl::StrCat(examples, " sequences of up to ", o.seq_len, " ", what, " (", tokens,
                   " tokens, right-padded with id ", pad,
                   cut > 0 ? absl::StrCat("; ", cut, " lines cut at --seq_len") : "", ")");
  return d;
}

}  // namespace qtrain::client
