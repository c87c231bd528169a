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
  client::DataOptions options;  // the clients' IDX loader: pixels / 255, shape H x W x 1
  options.path = images_path;
  options.format = "idx";
  options.labels_path = labels_path;
  options.limit = limit;
  QTRAIN_ASSIGN_OR_RETURN(client::Dataset data, client::LoadDataset(options));
  Shape shape = {data.size()};
  shape.insert(shape.end(), data.example_shape.begin(), data.example_shape.end());
  LabeledImages out;
  out.images = Tensor::Empty(DType::kF32, shape);
  out.labels = Tensor::Empty(DType::kS32, {data.size()});
  const std::vector<float> images = data.FloatInputs();
  std::memcpy(out.images.raw(), images.data(), images.size() * sizeof(float));
  std::memcpy(out.labels.raw(), data.labels.data(), data.labels.size() * sizeof(int32_t));
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
