// Reading a Hugging Face config.json for the "hf" architecture builders (hf_llama.cc,
// hf_gpt2.cc, hf_bert.cc): each field is read at most once and typed; CheckAllRead refuses every
// field neither read nor known to leave the model unchanged, so that a model qtrain does not
// implement is refused by name, never built differently.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <set>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/architectures.h"

namespace qtrain::engine::arch {

class HfConfig {
 public:
  // `family` is the config's model_type, for errors ("hf gpt2: ...").
  HfConfig(nlohmann::json j, std::string family) : j_(std::move(j)), family_(std::move(family)) {}

  // InvalidArgument "hf <family>: <what>".
  absl::Status Bad(const std::string& what) const;
  // Whether `k` is present and not null (and marks it read).
  bool Has(const std::string& k);
  // `k` as an integer in [lo, hi]; `def` when absent (absent without a default: an error).
  absl::StatusOr<int64_t> Int(const std::string& k, std::optional<int64_t> def, int64_t lo,
                              int64_t hi);
  absl::StatusOr<double> Real(const std::string& k, double def);
  absl::StatusOr<bool> Bool(const std::string& k, bool def);
  absl::StatusOr<std::string> String(const std::string& k, const std::string& def);
  // Reads `k` and requires it to equal `want` when present (a variant qtrain does not build).
  absl::Status Require(const std::string& k, const nlohmann::json& want);
  // Dropout probabilities: read and not applied (qtrain fine-tunes without dropout; the forward
  // is HF's eval-mode one). Each must be a number in [0, 1).
  absl::Status Dropouts(std::initializer_list<const char*> keys);
  const nlohmann::json& Raw(const std::string& k);
  // InvalidArgument naming every field neither read nor known to be irrelevant.
  absl::Status CheckAllRead() const;
  const std::string& family() const { return family_; }

 private:
  nlohmann::json j_;
  std::string family_;
  std::set<std::string> read_;
};

// The activation of HF's ACT2FN name (hidden_act, activation_function); InvalidArgument naming
// it otherwise.
absl::StatusOr<proto::Activation::Kind> HfActivation(HfConfig& c, const std::string& key,
                                                     const std::string& def);

// The sequence length: input_shape [T], default min(max_positions, 512), in [1, max_positions].
absl::StatusOr<int64_t> HfSequenceLength(HfConfig& c, Options& options, int64_t max_positions);

// The input spec of token ids (N, T), with the "pad_id" option (or `default_pad`) as its pad_id.
absl::StatusOr<proto::InputSpec> HfTokens(Options& options, int64_t t,
                                          std::optional<int64_t> default_pad, int64_t vocab);

// Builders per family. `c` holds the parsed config; model_type and architectures are read.
absl::StatusOr<proto::ModelSpec> HfLlama(HfConfig& c, Options& options);
absl::StatusOr<proto::ModelSpec> HfGpt2(HfConfig& c, Options& options);
absl::StatusOr<proto::ModelSpec> HfBert(HfConfig& c, Options& options,
                                        const std::string& architecture);

// y = x + body(norm(x)), the norm and body named in the parent (pre-norm).
proto::Module HfPreNorm(proto::Module norm, proto::Module body);

}  // namespace qtrain::engine::arch
