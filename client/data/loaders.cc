// The file formats: IDX, CSV and text. LoadDataset picks one from the options.
#include <sys/stat.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/data/dataset.h"

namespace qtrain::client {
namespace {

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

// "<dir>/<split>-images-idx3-ubyte[.gz]" and its labels file.
absl::StatusOr<std::string> FindInDir(const std::string& dir, const std::string& split,
                                      const std::string& kind) {
  for (const char* ext : {".gz", ""}) {
    const std::string p = absl::StrCat(dir, "/", split, "-", kind, "-ubyte", ext);
    if (Exists(p)) return p;
  }
  return absl::NotFoundError(absl::StrCat("no ", split, "-", kind, "-ubyte[.gz] in ", dir,
                                          " (--split is \"", split, "\")"));
}

void Truncate(Dataset& d, int64_t limit) {
  if (limit <= 0 || limit >= d.size()) return;
  const auto elements = static_cast<size_t>(limit * d.example_elements());
  if (d.tokens) {
    d.token_ids.resize(elements);
  } else if (!d.pixels.empty()) {
    d.pixels.resize(elements);
  } else {
    d.features.resize(elements);
  }
  if (!d.labels.empty()) d.labels.resize(static_cast<size_t>(limit * d.labels_per_example));
  if (!d.float_targets.empty()) d.float_targets.resize(static_cast<size_t>(limit));
}

absl::StatusOr<Dataset> LoadIdx(const DataOptions& o) {
  std::string images = o.path, labels = o.labels_path;
  if (IsDirectory(o.path)) {
    auto found = FindInDir(o.path, o.split, "images-idx3");
    if (!found.ok()) return found.status();
    images = *found;
    if (labels.empty()) {
      auto l = FindInDir(o.path, o.split, "labels-idx1");
      if (!l.ok()) return l.status();
      labels = *l;
    }
  } else if (labels.empty()) {
    // t10k-images-idx3-ubyte → t10k-labels-idx1-ubyte; also t10k-images.idx3-ubyte,
    // my-images.gz, digits.idx3 (either word suffices).
    const size_t base = images.find_last_of('/') + 1;
    labels = images;
    const size_t at = labels.find("images", base), idx = labels.find("idx3", base);
    if (at == std::string::npos && idx == std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot derive the labels file from ", images,
                       " (no \"images\" or \"idx3\" in its name to replace); pass --labels"));
    }
    if (idx != std::string::npos) labels.replace(idx, 4, "idx1");
    if (at != std::string::npos) labels.replace(at, 6, "labels");
  }
  auto img = ReadIdx(images);
  if (!img.ok()) return img.status();
  auto lab = ReadIdx(labels);
  if (!lab.ok()) return lab.status();
  if (img->dims.size() < 2 || lab->dims.size() != 1 || lab->dims[0] != img->dims[0]) {
    return absl::InvalidArgumentError(absl::StrCat(images, " (", absl::StrJoin(img->dims, "x"),
                                                   ") and ", labels, " (",
                                                   absl::StrJoin(lab->dims, "x"), ") disagree"));
  }
  Dataset d;
  d.example_shape.assign(img->dims.begin() + 1, img->dims.end());
  if (d.example_shape.size() == 2) d.example_shape.push_back(1);  // HWC with one channel
  // Sent as bytes with their scale: the server computes pixel · scale in f32, as this loader
  // once did itself, in a quarter of the bytes.
  d.pixel_scale = o.input_scale != 0 ? o.input_scale : 1.0f / 255.0f;
  d.pixels.assign(img->bytes.begin(), img->bytes.end());
  d.labels.resize(lab->bytes.size());
  for (size_t i = 0; i < lab->bytes.size(); ++i) {
    d.labels[i] = static_cast<unsigned char>(lab->bytes[i]);
  }
  Truncate(d, o.limit);
  d.description = absl::StrCat(d.size(), " examples of ", absl::StrJoin(d.example_shape, "x"),
                               " from ", images);
  return d;
}

bool ParseFloat(absl::string_view s, float* out) {
  return absl::SimpleAtof(absl::StripAsciiWhitespace(s), out);
}

// The label column: by name or index, "" picks a conventional name or the last column.
absl::StatusOr<int64_t> LabelColumn(const DataOptions& o, const std::vector<std::string>& header,
                                    int64_t columns) {
  if (o.label_column == "none") return -1;
  int64_t index = 0;
  if (!o.label_column.empty() && absl::SimpleAtoi(o.label_column, &index)) {
    if (index < 0) index += columns;
    if (index < 0 || index >= columns) {
      return absl::InvalidArgumentError(absl::StrCat("--label_column=", o.label_column, " but ",
                                                     o.path, " has ", columns, " columns"));
    }
    return index;
  }
  // The named column, else the conventional names in this order of preference.
  const std::vector<std::string> wanted =
      o.label_column.empty() ? std::vector<std::string>{"label", "target", "class", "y"}
                             : std::vector<std::string>{absl::AsciiStrToLower(o.label_column)};
  for (const std::string& want : wanted) {
    for (int64_t i = 0; i < static_cast<int64_t>(header.size()); ++i) {
      if (absl::AsciiStrToLower(absl::StripAsciiWhitespace(header[i])) == want) return i;
    }
  }
  if (!o.label_column.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("--label_column=", o.label_column, ": no such column in ", o.path));
  }
  return columns - 1;
}

bool IsClassIndex(float v) {
  return v >= 0 && v < 2147483648.0f && v == static_cast<float>(static_cast<int32_t>(v));
}

absl::StatusOr<Dataset> LoadCsv(const DataOptions& o) {
  if (!o.targets.empty() && o.targets != "class" && o.targets != "float") {
    return absl::InvalidArgumentError(
        absl::StrCat("--targets=", o.targets, " is not one of class, float"));
  }
  auto text = ReadMaybeGzip(o.path);
  if (!text.ok()) return text.status();
  absl::string_view body = *text;
  absl::ConsumePrefix(&body, "\xEF\xBB\xBF");  // a UTF-8 byte-order mark
  std::vector<absl::string_view> lines = absl::StrSplit(body, '\n', absl::SkipWhitespace());
  if (lines.empty()) return absl::InvalidArgumentError(absl::StrCat(o.path, " is empty"));
  std::vector<std::string> header;
  size_t first = 0;
  float probe = 0;
  std::vector<absl::string_view> cells = absl::StrSplit(lines[0], ',');
  if (!ParseFloat(cells[0], &probe)) {  // a header row
    for (auto c : cells) header.emplace_back(c);
    first = 1;
  }
  const auto columns = static_cast<int64_t>(cells.size());
  auto label = LabelColumn(o, header, columns);
  if (!label.ok()) return label.status();
  Dataset d;
  const int64_t features = *label >= 0 ? columns - 1 : columns;
  if (features < 1) {
    return absl::InvalidArgumentError(absl::StrCat(o.path, " has no feature columns"));
  }
  const float scale = o.input_scale != 0 ? o.input_scale : 1.0f;
  int64_t rows = 0;
  for (size_t li = first; li < lines.size(); ++li, ++rows) {
    if (o.limit > 0 && rows >= o.limit) break;
    cells = absl::StrSplit(lines[li], ',');
    if (static_cast<int64_t>(cells.size()) != columns) {
      return absl::InvalidArgumentError(absl::StrCat(o.path, " line ", li + 1, ": ", cells.size(),
                                                     " columns, expected ", columns));
    }
    for (int64_t c = 0; c < columns; ++c) {
      float v = 0;
      if (!ParseFloat(cells[c], &v)) {
        return absl::InvalidArgumentError(absl::StrCat(o.path, " line ", li + 1, " column ", c + 1,
                                                       ": \"", cells[c], "\" is not a number"));
      }
      if (c != *label) {
        d.features.push_back(v * scale);
        continue;
      }
      if (o.targets == "class" && !IsClassIndex(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(o.path, " line ", li + 1, ": label \"", cells[c],
                         "\" is not a class index (--targets=float for regression)"));
      }
      d.float_targets.push_back(v);
    }
  }
  // Class indices unless asked for float targets or some value is not an index.
  if (o.targets != "float" &&
      std::all_of(d.float_targets.begin(), d.float_targets.end(), IsClassIndex)) {
    d.labels.assign(d.float_targets.begin(), d.float_targets.end());
    d.float_targets.clear();
  }
  d.example_shape = {features};
  if (!o.input_shape.empty()) {
    int64_t n = 1;
    for (int64_t s : o.input_shape) n *= s;
    if (n != features) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input_shape=", absl::StrJoin(o.input_shape, ","), " has ", n,
                       " elements but ", o.path, " has ", features, " feature columns"));
    }
    d.example_shape = o.input_shape;
  }
  const std::string target_kind = d.float_targets.empty() ? "class labels" : "float targets";
  d.description =
      absl::StrCat(d.size(), " examples of ", features, " features",
                   *label >= 0 ? absl::StrCat(" (", target_kind, ": column ", *label, ")") : "",
                   " from ", o.path);
  return d;
}

// Text as byte tokens (vocabulary 256), or through a SentencePiece model (--tokenizer).
absl::StatusOr<Dataset> LoadText(const DataOptions& o) {
  auto text = ReadMaybeGzip(o.path);
  if (!text.ok()) return text.status();
  if (o.sequences == "lines") {
    std::vector<std::vector<int32_t>> lines;
    if (!o.tokenizer.empty()) {
      auto encoded = EncodeSentencePieceLines(o.path, o.tokenizer);
      if (!encoded.ok()) return encoded.status();
      lines = *std::move(encoded);
    } else {
      for (absl::string_view line : absl::StrSplit(*text, '\n')) {
        if (absl::EndsWith(line, "\r")) line.remove_suffix(1);  // CRLF files
        lines.emplace_back();
        for (char c : line) lines.back().push_back(static_cast<uint8_t>(c));
      }
    }
    // Empty lines hold nothing to learn: they are skipped.
    std::vector<std::vector<int32_t>> sequences;
    for (auto& line : lines) {
      if (!line.empty()) sequences.push_back(std::move(line));
    }
    return PaddedSequences(
        sequences, o,
        absl::StrCat(o.tokenizer.empty() ? "byte tokens" : "tokens of " + o.tokenizer,
                     " from the lines of ", o.path));
  }
  if (!o.tokenizer.empty()) {
    auto ids = EncodeSentencePiece(o.path, o.tokenizer);
    if (!ids.ok()) return ids.status();
    return TokenWindows(*ids, o, absl::StrCat("tokens of ", o.tokenizer, " from ", o.path));
  }
  std::vector<int32_t> ids(text->begin(), text->end());
  for (int32_t& id : ids) id &= 0xff;  // bytes, whatever char's signedness
  return TokenWindows(ids, o, absl::StrCat("byte tokens from ", o.path));
}

}  // namespace

absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  if (IsDirectory(path)) return absl::InvalidArgumentError(absl::StrCat(path, " is a directory"));
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  // A stream cut short reads as a clean end; gzclose reports it (Z_BUF_ERROR).
  const bool failed = n < 0;
  if (gzclose(f) != Z_OK || failed) {
    return absl::DataLossError(absl::StrCat("corrupt or truncated gzip data in ", path));
  }
  return out;
}

absl::StatusOr<IdxArray> ReadIdx(const std::string& path) {
  auto raw = ReadMaybeGzip(path);
  if (!raw.ok()) return raw.status();
  const auto* p = reinterpret_cast<const unsigned char*>(raw->data());
  // Magic: two zero bytes, type 0x08 (unsigned byte), then the number of dimensions.
  if (raw->size() < 4 || p[0] != 0 || p[1] != 0 || p[2] != 0x08 || p[3] == 0 || p[3] > 4) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not an unsigned-byte IDX file"));
  }
  IdxArray out;
  const size_t header = 4 + 4 * size_t{p[3]};
  if (raw->size() < header) return absl::InvalidArgumentError(absl::StrCat(path, " is truncated"));
  size_t elements = 1;
  for (size_t i = 0; i < p[3]; ++i) {
    const unsigned char* d = p + 4 + 4 * i;
    const uint32_t dim =
        (uint32_t{d[0]} << 24) | (uint32_t{d[1]} << 16) | (uint32_t{d[2]} << 8) | d[3];
    out.dims.push_back(dim);
    elements *= dim;
  }
  if (raw->size() != header + elements) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", raw->size() - header, " data bytes, the header says ", elements));
  }
  out.bytes = raw->substr(header);
  return out;
}

// Whether the file (gzipped or not) starts like an unsigned-byte IDX array: 0, 0, 0x08, then 1
// to 4 dimensions. Names vary too much (t10k-images-idx3-ubyte, t10k-images.idx3-ubyte, ...).
bool HasIdxMagic(const std::string& path) {
  // Only regular files: peeking at a pipe (--data=/dev/stdin) would consume its start.
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return false;
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files as they are
  if (f == nullptr) return false;
  unsigned char magic[4] = {};
  const int n = gzread(f, magic, sizeof magic);
  gzclose(f);
  return n == 4 && magic[0] == 0 && magic[1] == 0 && magic[2] == 0x08 && magic[3] >= 1 &&
         magic[3] <= 4;
}

absl::StatusOr<Dataset> LoadDataset(const DataOptions& o) {
  if (o.path.empty()) return absl::InvalidArgumentError("--data is required");
  std::string format = o.format;
  if (format.empty()) {
    const std::string name = absl::AsciiStrToLower(o.path.substr(o.path.find_last_of('/') + 1));
    if (absl::EndsWith(name, ".csv") || absl::EndsWith(name, ".csv.gz")) {
      format = "csv";
    } else if (absl::EndsWith(name, ".npy") || absl::EndsWith(name, ".bin")) {
      format = name.substr(name.size() - 3);
    } else if (IsDirectory(o.path) || !o.labels_path.empty() || HasIdxMagic(o.path)) {
      format = "idx";
    } else {
      format = "text";
    }
  }
  if (!o.targets.empty() && format != "csv") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--targets=", o.targets, " applies to CSV data only (", o.path, " is ", format, ")"));
  }
  if (!o.tokenizer.empty() && format != "text") {
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer applies to text data only (", o.path, " is ", format, ")"));
  }
  if (!o.sequences.empty() && o.sequences != "windows" && o.sequences != "lines") {
    return absl::InvalidArgumentError(
        absl::StrCat("--sequences=", o.sequences, " is not one of windows, lines"));
  }
  if (o.sequences == "lines" && format != "text") {
    return absl::InvalidArgumentError(
        absl::StrCat("--sequences=lines applies to text data only (", o.path, " is ", format, ")"));
  }
  if (!o.token_dtype.empty() && format != "bin") {
    return absl::InvalidArgumentError(absl::StrCat(
        "--token_dtype applies to .bin token files only (", o.path, " is ", format, ")"));
  }
  absl::StatusOr<Dataset> d = absl::InvalidArgumentError(
      absl::StrCat("--format=", format, " is not one of idx, csv, text, npy, bin"));
  if (format == "idx") d = LoadIdx(o);
  if (format == "csv") d = LoadCsv(o);
  if (format == "text") d = LoadText(o);
  if (format == "npy" || format == "bin") {
    auto ids = format == "npy" ? ReadNpyTokens(o.path) : ReadBinTokens(o.path, o.token_dtype);
    if (!ids.ok()) return ids.status();
    d = TokenWindows(*ids, o, absl::StrCat("token ids from ", o.path));
  }
  if (d.ok()) d->format = format;
  return d;
}

}  // namespace qtrain::client
