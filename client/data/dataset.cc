#include "client/data/dataset.h"

#include <algorithm>
#include <cstring>
#include <numeric>

namespace qtrain::client {
namespace {

template <typename T>
void Gather(const std::vector<T>& src, int64_t width, const std::vector<int64_t>& rows,
            std::string* out) {
  out->resize(rows.size() * static_cast<size_t>(width) * sizeof(T));
  char* dst = out->data();
  const size_t row_bytes = static_cast<size_t>(width) * sizeof(T);
  for (int64_t r : rows) {
    std::memcpy(dst, src.data() + r * width, row_bytes);
    dst += row_bytes;
  }
}

}  // namespace

int64_t Dataset::example_elements() const {
  int64_t n = 1;
  for (int64_t d : example_shape) n *= d;
  return n;
}

int64_t Dataset::size() const {
  const int64_t e = example_elements();
  if (e == 0) return 0;
  const size_t n = tokens ? token_ids.size() : !pixels.empty() ? pixels.size() : features.size();
  return static_cast<int64_t>(n) / e;
}

std::vector<float> Dataset::FloatInputs() const {
  if (pixels.empty()) return features;
  std::vector<float> out(pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) out[i] = static_cast<float>(pixels[i]) * pixel_scale;
  return out;
}

void Dataset::FillInputs(const std::vector<int64_t>& rows, v1::Tensor* out) const {
  out->Clear();
  out->set_dtype(tokens ? v1::Tensor::I32 : !pixels.empty() ? v1::Tensor::U8 : v1::Tensor::F32);
  out->add_shape(static_cast<int64_t>(rows.size()));
  for (int64_t d : example_shape) out->add_shape(d);
  if (tokens) {
    Gather(token_ids, example_elements(), rows, out->mutable_data());
  } else if (!pixels.empty()) {
    Gather(pixels, example_elements(), rows, out->mutable_data());
    if (pixel_scale != 1.0f) out->add_scale(pixel_scale);
  } else {
    Gather(features, example_elements(), rows, out->mutable_data());
  }
}

void Dataset::FillTargets(const std::vector<int64_t>& rows, v1::Tensor* out) const {
  out->Clear();
  out->add_shape(static_cast<int64_t>(rows.size()));
  if (!float_targets.empty()) {
    out->set_dtype(v1::Tensor::F32);
    out->add_shape(1);
    Gather(float_targets, 1, rows, out->mutable_data());
    return;
  }
  out->set_dtype(v1::Tensor::I32);
  if (labels_per_example > 1) out->add_shape(labels_per_example);
  Gather(labels, labels_per_example, rows, out->mutable_data());
}

BatchIterator::BatchIterator(const Dataset& data, int64_t batch_size, int epochs, bool shuffle,
                             uint64_t seed, int64_t max_batches)
    : data_(data),
      batch_size_(std::clamp<int64_t>(batch_size, 1, std::max<int64_t>(1, data.size()))),
      shuffle_(shuffle),
      rng_(seed) {
  const int64_t n = data.size();
  total_ = (n + batch_size_ - 1) / batch_size_ * std::max(0, epochs);
  if (max_batches > 0) total_ = std::min(total_, max_batches);
  order_.resize(static_cast<size_t>(n));
  std::iota(order_.begin(), order_.end(), 0);
  offset_ = n;  // the first Next starts (and shuffles) a pass
}

bool BatchIterator::Next(std::vector<int64_t>* rows) {
  if (sent_ >= total_) return false;
  const auto n = static_cast<int64_t>(order_.size());
  if (offset_ >= n) {
    offset_ = 0;
    if (shuffle_) std::shuffle(order_.begin(), order_.end(), rng_);
  }
  const int64_t count = std::min(batch_size_, n - offset_);
  rows->assign(order_.begin() + offset_, order_.begin() + offset_ + count);
  offset_ += count;
  examples_ += count;
  ++sent_;
  return true;
}

bool BatchIterator::NextBatch(v1::Batch* batch) {
  std::vector<int64_t> rows;
  if (!Next(&rows)) return false;
  data_.FillInputs(rows, batch->mutable_inputs());
  if (data_.has_targets()) data_.FillTargets(rows, batch->mutable_targets());
  return true;
}

bool BatchIterator::NextInputs(v1::Tensor* inputs) {
  std::vector<int64_t> rows;
  if (!Next(&rows)) return false;
  data_.FillInputs(rows, inputs);
  return true;
}

}  // namespace qtrain::client
