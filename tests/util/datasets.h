// Real data for tests and benchmarks, from Debian packages: Fashion-MNIST (dataset-fashion-mnist,
// gzipped IDX files) and English text (bible-kjv). Test-only helpers; errors are Status.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "kernels/tensor.h"

namespace qtrain::testing {

inline constexpr char kFashionMnistDir[] = "/usr/share/datasets/fashion-mnist";

struct LabeledImages {
  Tensor images;  // f32 (N, 28, 28, 1) scaled to [0, 1]
  Tensor labels;  // s32 (N)
};

// Reads an IDX images file and its labels file (gzipped or not), keeping the first `limit`
// examples (all when limit <= 0). NotFound / DataLoss / InvalidArgument on missing or bad files.
absl::StatusOr<LabeledImages> LoadIdx(const std::string& images_path,
                                      const std::string& labels_path, int64_t limit = 0);

// "train" or "t10k" split of Debian's Fashion-MNIST.
absl::StatusOr<LabeledImages> LoadFashionMnist(const std::string& split, int64_t limit = 0);

// Rows [begin, begin + count) of a tensor along axis 0.
Tensor SliceRows(const Tensor& t, int64_t begin, int64_t count);

// Text of the King James Bible verses `range` (e.g. "Gen1:1-Gen9:29") via bible-kjv's `bible`.
absl::StatusOr<std::string> LoadBibleText(const std::string& range);

}  // namespace qtrain::testing
