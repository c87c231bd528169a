// Datasets a client streams to qtrain-server: Fashion-MNIST / MNIST IDX files (gzipped or not),
// CSV tables, plain text as byte tokens or through a SentencePiece model, and pre-tokenized ids
// (.npy arrays, nanoGPT-style .bin files of uint16 / uint32). Everything is loaded into memory
// once; BatchIterator then cuts wire batches (qtrain.v1.Batch) in order or shuffled.
//
// Errors: NotFound (missing file), DataLoss (corrupt gzip), InvalidArgument (a malformed file or
// option, naming the file, line or option and the value).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "qtrain/v1/trainer_service.pb.h"

namespace qtrain::client {

struct Dataset {
  std::string description;             // "60000 examples of 28x28x1 from …"
  std::string format;                  // "idx", "csv", "text", "npy" or "bin": its loader
  std::vector<int64_t> example_shape;  // shape of one input example
  bool tokens = false;                 // I32 token inputs (text) instead of F32 features
  std::vector<float> features;         // F32 inputs, examples × prod(example_shape)
  std::vector<uint8_t> pixels;         // or U8 inputs (IDX images), sent as bytes with scale
  float pixel_scale = 1;               // pixels: the server takes pixel · pixel_scale
  std::vector<int32_t> token_ids;      // I32 inputs, examples × prod(example_shape)
  std::vector<int32_t> labels;         // per example, or per token for text; empty: unlabeled
  int64_t labels_per_example = 1;
  std::vector<float> float_targets;  // regression (MSE) targets, one per example, instead
                                     // of class labels

  int64_t size() const;
  bool has_targets() const { return !labels.empty() || !float_targets.empty(); }
  int64_t example_elements() const;
  // The F32 inputs as the server sees them: features, or pixel · pixel_scale (in f32).
  std::vector<float> FloatInputs() const;
  // Writes examples `rows` as one (N, example_shape...) tensor — U8 with scale = pixel_scale for
  // pixels, a quarter of F32's bytes — and their targets: I32 labels, or F32 of shape (N, 1) for
  // float targets.
  void FillInputs(const std::vector<int64_t>& rows, v1::Tensor* out) const;
  void FillTargets(const std::vector<int64_t>& rows, v1::Tensor* out) const;
};

struct DataOptions {
  std::string path;                  // IDX directory or images file, .csv[.gz], or a text file
  std::string format;                // "", "idx", "csv", "text", "npy", "bin" ("": from the path)
  std::string split = "train";       // IDX directories: "train" or "t10k"
  std::string labels_path;           // IDX images file: its labels file ("": derived from the name)
  std::string label_column;          // CSV: a header name or an index (negative from the end);
                                     // "": a column named label/target/class/y, else the last;
                                     // "none": unlabeled
  std::string targets;               // CSV label column: "class" (indices), "float" (MSE), or
                                     // "": class when every value is an index, else float
  std::vector<int64_t> input_shape;  // reshape each example (CSV; default: flat)
  float input_scale = 0;             // multiply features (0: 1/255 for IDX, 1 for CSV)
  int64_t seq_len = 64;              // text and token ids: tokens per example
  std::string tokenizer;             // text: a SentencePiece model ("": byte tokens)
  std::string token_dtype;           // .bin: "uint16" (default) or "uint32"
  // Token data: each window's labels are its own ids (a session whose loss shifts labels, HF's
  // causal LMs) instead of the ids one position on.
  bool labels_are_inputs = false;
  // Text: "windows" (or ""): the token stream cut into full windows of seq_len; "lines": each
  // non-empty line one sequence, cut to seq_len and right-padded with pad_id (which must be set:
  // the session's input.pad_id, so the server masks the padding).
  std::string sequences;
  std::optional<int32_t> pad_id;
  int64_t limit = 0;  // keep the first `limit` examples (0: all)
};

absl::StatusOr<Dataset> LoadDataset(const DataOptions& options);

// Token-id formats (tokens.cc). The ids of a 1-D .npy array of a little-endian integer dtype;
// InvalidArgument for another shape, dtype, or a negative or over-2^31 id.
absl::StatusOr<std::vector<int32_t>> ReadNpyTokens(const std::string& path);
// A raw little-endian array of `dtype` ("uint16" or "uint32"), as nanoGPT's prepare.py writes.
absl::StatusOr<std::vector<int32_t>> ReadBinTokens(const std::string& path,
                                                   const std::string& dtype);
// The text of `path` (gzip or plain) tokenized by the SentencePiece model at `model_path`
// (Llama-2's tokenizer.model), through the qtrain-spm helper (spm_process.cc): $QTRAIN_SPM, else
// qtrain-spm beside the running executable, else on PATH. InvalidArgument when the model does not
// load; FailedPrecondition when the helper cannot be run.
absl::StatusOr<std::vector<int32_t>> EncodeSentencePiece(const std::string& path,
                                                         const std::string& model_path);
// The same per line of the file (split at '\n'; a line's ids may be empty).
absl::StatusOr<std::vector<std::vector<int32_t>>> EncodeSentencePieceLines(
    const std::string& path, const std::string& model_path);
// Runs the qtrain-spm helper with `args`; its stdout, or the error it reported. For tools and tests
// (`{"train", "--input=F", ...}` trains a model).
absl::StatusOr<std::string> RunSpmHelper(const std::vector<std::string>& args);
// `ids` cut into windows of options.seq_len (up to options.limit), labelled per
// options.labels_are_inputs; `what` describes the ids ("byte tokens from FILE").
absl::StatusOr<Dataset> TokenWindows(const std::vector<int32_t>& ids, const DataOptions& options,
                                     const std::string& what);

// One example per sequence (sequences.empty() is an error), cut to options.seq_len and
// right-padded with *options.pad_id; labels per options.labels_are_inputs (the next id otherwise,
// pad_id after a sequence's last token: it learns to end there).
absl::StatusOr<Dataset> PaddedSequences(const std::vector<std::vector<int32_t>>& sequences,
                                        const DataOptions& options, const std::string& what);

// Reads a whole file, transparently gunzipping it when it is gzip data.
absl::StatusOr<std::string> ReadMaybeGzip(const std::string& path);

// One IDX array (http://yann.lecun.com/exdb/mnist/): unsigned-byte data and its dimensions.
struct IdxArray {
  std::vector<int64_t> dims;
  std::string bytes;
};
absl::StatusOr<IdxArray> ReadIdx(const std::string& path);

// Cuts a dataset into batches of `batch_size` (the last may be smaller; clamped to [1, size]) for
// `epochs` passes, shuffling each pass when `shuffle`; stops early after `max_batches` (0: no
// limit).
class BatchIterator {
 public:
  BatchIterator(const Dataset& data, int64_t batch_size, int epochs, bool shuffle, uint64_t seed,
                int64_t max_batches = 0);
  int64_t total_batches() const { return total_; }
  int64_t examples_sent() const { return examples_; }
  // The next batch's rows; false after the last.
  bool Next(std::vector<int64_t>* rows);
  bool NextBatch(v1::Batch* batch);
  bool NextInputs(v1::Tensor* inputs);

 private:
  const Dataset& data_;
  int64_t batch_size_;
  int64_t total_ = 0, sent_ = 0, examples_ = 0, offset_ = 0;
  bool shuffle_;
  std::mt19937_64 rng_;
  std::vector<int64_t> order_;
};

}  // namespace qtrain::client
