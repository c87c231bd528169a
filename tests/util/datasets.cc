#include "tests/util/datasets.h"

#include <cstdio>
#include <cstring>
#include <memory>

#include "absl/strings/str_cat.h"
#include "client/data/dataset.h"
#include "kernels/status_macros.h"

namespace qtrain::testing {
absl::StatusOr<LabeledImages> LoadIdx(const std::string& images_path,
                                      const std::string& labels_path, int64_t limit) {
  QTRAIN_ASSIGN_OR_RETURN(client::IdxArray images, client::ReadIdx(images_path));
  QTRAIN_ASSIGN_OR_RETURN(client::IdxArray labels, client::ReadIdx(labels_path));
  if (images.dims.size() != 3 || labels.dims.size() != 1 || labels.dims[0] != images.dims[0]) {
    return absl::InvalidArgumentError(
        absl::StrCat(images_path, " and ", labels_path, " are not matching IDX3 / IDX1 files"));
  }
  int64_t n = images.dims[0];
  const int64_t rows = images.dims[1], cols = images.dims[2];
  if (limit > 0 && limit < n) {
    n = limit;
  }
  LabeledImages out;
  out.images = Tensor::Empty(DType::kF32, {n, rows, cols, 1});
  out.labels = Tensor::Empty(DType::kS32, {n});
  const auto* px = reinterpret_cast<const unsigned char*>(images.bytes.data());
  for (int64_t i = 0; i < n * rows * cols; ++i) {
    out.images.data<float>()[i] = px[i] / 255.0f;
  }
  for (int64_t i = 0; i < n; ++i) {
    out.labels.data<int32_t>()[i] = static_cast<unsigned char>(labels.bytes[i]);
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
