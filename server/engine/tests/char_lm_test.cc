// A character-level transformer language model on real text (Debian's bible-kjv) trained under
// int8 QT with the attention einsums quantized: its loss must fall well below the unigram
// entropy of the text.
#include <cmath>
#include <map>
#include <random>

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "server/engine/tests/test_models.h"
#include "tests/util/datasets.h"

namespace qtrain::engine {
namespace {

using testing::FromJson;

// Drops the "Ge1:1 " verse references, keeping the text.
std::string StripReferences(const std::string& raw) {
  std::string out;
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t end = raw.find('\n', pos);
    if (end == std::string::npos) {
      end = raw.size();
    }
    const size_t space = raw.find(' ', pos);
    if (space != std::string::npos && space < end) {
      out.append(raw, space + 1, end - space - 1);
    }
    out.push_back(' ');
    pos = end + 1;
  }
  return out;
}

TEST(CharLmTest, Int8QtTransformerLearnsTheText) {
  auto raw = qtrain::testing::LoadBibleText("Gen1:1-Gen20:18");
  ASSERT_TRUE(raw.ok()) << raw.status() << " (apt-get install bible-kjv)";
  const std::string text = StripReferences(*raw);
  std::map<char, int> vocab;
  for (char c : text) {
    vocab.emplace(c, 0);
  }
  int next_id = 0;
  for (auto& [c, id] : vocab) {
    id = next_id++;
  }
  std::vector<double> counts(vocab.size());
  for (char c : text) {
    counts[vocab[c]] += 1;
  }
  double entropy = 0;
  for (double n : counts) {
    if (n > 0) {
      entropy -= n / text.size() * std::log(n / text.size());
    }
  }

  constexpr int64_t kSeq = 64, kBatch = 32, kSteps = 300;
  const std::string spec_json = absl::StrCat(R"({"input": {"kind": "TOKENS", "shape": [)", kSeq,
                                             R"(]}, "body": {"sequential": {"layers": [
        {"embedding": {"num_embeddings": )",
                                             vocab.size(), R"(, "features": 96}},
        {"name": "blocks_0", "residual": {"body": {"sequential": {"layers": [
          {"layer_norm": {}}, {"name": "attn", "attention": {"num_heads": 4, "causal": true}}]}}}},
        {"name": "mlp_0", "residual": {"body": {"sequential": {"layers": [
          {"layer_norm": {}}, {"linear": {"features": 256}}, {"activation": {"kind": "GELU"}},
          {"linear": {"features": 96}}]}}}},
        {"layer_norm": {}}, {"name": "head", "linear": {"features": )",
                                             vocab.size(), R"(}}]}},
      "loss": {"kind": "SOFTMAX_CROSS_ENTROPY"}})");
  auto opt = FromJson<proto::OptimizerConfig>(R"({"adamw": {}, "clip_global_norm": 1.0,
      "schedule": {"kind": "WARMUP_COSINE", "learning_rate": 3e-3, "warmup_steps": 20,
                   "decay_steps": 280, "end_learning_rate": 3e-4}})");
  auto t = Trainer::Create(FromJson<proto::ModelSpec>(spec_json), testing::Int8Rules(true), opt, 7,
                           testing::OnednnBackend());
  ASSERT_TRUE(t.ok()) << t.status();
  // The attention einsums are quantized too.
  int quantized_einsums = 0;
  for (const auto& [rule, op] : (*t)->model().Ops()) {
    quantized_einsums += rule == 0 && op.find(":einsum") != std::string::npos;
  }
  EXPECT_EQ(quantized_einsums, 2);

  std::mt19937 gen(3);
  std::uniform_int_distribution<int64_t> start(0, text.size() - kSeq - 2);
  double last = 0;
  for (int64_t step = 0; step < kSteps; ++step) {
    Batch b{Tensor::Empty(DType::kS32, {kBatch, kSeq}), Tensor::Empty(DType::kS32, {kBatch, kSeq})};
    for (int64_t i = 0; i < kBatch; ++i) {
      const int64_t s = start(gen);
      for (int64_t j = 0; j < kSeq; ++j) {
        b.inputs.data<int32_t>()[i * kSeq + j] = vocab[text[s + j]];
        b.targets.data<int32_t>()[i * kSeq + j] = vocab[text[s + j + 1]];
      }
    }
    auto r = (*t)->TrainStep(b);
    ASSERT_TRUE(r.ok()) << r.status();
    last = step >= kSteps - 20 ? last + r->loss / 20 : 0;
  }
  std::printf("unigram entropy %.3f nats, final loss (mean of last 20 steps) %.3f\n", entropy,
              last);
  EXPECT_LT(last, entropy - 0.6);  // measured: 2.08 vs an entropy of 2.98
}

}  // namespace
}  // namespace qtrain::engine
