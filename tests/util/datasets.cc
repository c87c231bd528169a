#include "tests/util/datasets.h"

#include <zlib.h>

#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain::testing {
namespace {

absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files too
  if (f == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open ", path));
  }
  std::string out;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) {
    out.append(buf, static_cast<size_t>(n));
  }
  const bool failed = n < 0;
  gzclose(f);
  if (failed) {
    return absl::DataLossError(absl::StrCat("corrupt gzip data in ", path));
  }
  return out;
}

uint32_t BigEndian(const std::string& s, size_t offset) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data() + offset);
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | p[3];
}

}  // namespace

absl::StatusOr<LabeledImages> LoadIdx(const std::string& images_path,
                                      const std::string& labels_path, int64_t limit) {
  QTRAIN_ASSIGN_OR_RETURN(std::string images, ReadMaybeGzip(images_path));
  QTRAIN_ASSIGN_OR_RETURN(std::string labels, ReadMaybeGzip(labels_path));
  if (images.size() < 16 || BigEndian(images, 0) != 0x00000803) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, " is not an IDX3 image file"));
  }
  if (labels.size() < 8 || BigEndian(labels, 0) != 0x00000801) {
    return absl::InvalidArgumentError(absl::StrCat(labels_path, " is not an IDX1 label file"));
  }
  int64_t n = BigEndian(images, 4);
  const int64_t rows = BigEndian(images, 8), cols = BigEndian(images, 12);
  if (static_cast<int64_t>(BigEndian(labels, 4)) != n ||
      images.size() != static_cast<size_t>(16 + n * rows * cols) ||
      labels.size() != static_cast<size_t>(8 + n)) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, " and ", labels_path, " disagree or are truncated"));
  }
  if (limit > 0 && limit < n) {
    n = limit;
  }
  LabeledImages out;
  out.images = Tensor::Empty(DType::kF32, {n, rows, cols, 1});
  out.labels = Tensor::Empty(DType::kS32, {n});
  const auto* px = reinterpret_cast<const unsigned char*>(images.data() + 16);
  for (int64_t i = 0; i < n * rows * cols; ++i) {
    out.images.data<float>()[i] = px[i] / 255.0f;
  }
  for (int64_t i = 0; i < n; ++i) {
    out.labels.data<int32_t>()[i] = static_cast<unsigned char>(labels[8 + i]);
  }
  return out;
}

absl::StatusOr<LabeledImages> LoadFashionMnist(const std::string& split, int64_t limit) {
  const std::string dir = kFashionMnistDir;
  return LoadIdx(absl::StrCat(dir, "/", split, "-images-idx3-ubyte.gz"),
                 absl::StrCat(dir, "/", split, "-labels-idx1-ubyte.gz"), limit);
}

Tensor SliceRows(const Tensor& t, int64_t begin, int64_t count) {
  Shape shape = t.shape();
  shape[0] = count;
  Tensor out = Tensor::Empty(t.dtype(), shape);
  const size_t row_bytes = t.nbytes() / static_cast<size_t>(t.dim(0));
  std::memcpy(out.raw(), static_cast<const char*>(t.raw()) + begin * row_bytes, count * row_bytes);
  return out;
}

absl::StatusOr<std::string> LoadBibleText(const std::string& range) {
  const std::string cmd = absl::StrCat("bible -f '", range, "' 2>/dev/null");
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) {
    return absl::NotFoundError("cannot run `bible` (install bible-kjv)");
  }
  std::string out;
  char buf[1 << 16];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe.get())) > 0) {
    out.append(buf, n);
  }
  if (out.size() < 1000) {
    return absl::NotFoundError(absl::StrCat("`bible -f ", range, "` printed too little text"));
  }
  return out;
}

}  // namespace qtrain::testing
