// Shared by the fuzz targets: what a fuzzed model may cost (the server's budget, scaled down to
// a fuzzer's memory), a trainer built under it, and state comparison.
#pragma once

#include <cstring>
#include <map>
#include <memory>
#include <string>

#include <google/protobuf/stubs/logging.h>

#include "kernels/backend/backend.h"
#include "server/engine/memory_budget.h"
#include "server/engine/trainer.h"

namespace qtrain::fuzz {

// Protobuf logs every invalid UTF-8 string it parses; fuzzed input is full of them.
inline const bool kQuietProtobuf = (google::protobuf::SetLogHandler(nullptr), true);

// A session of at most 64 MiB and steps on 2 examples of at most 64 MiB.
inline constexpr int64_t kBudgetBytes = int64_t{64} << 20;
inline constexpr int64_t kBatch = 2;

// The trainer of a configuration that fits the budget (on the reference backend: fast to
// create, the same numerics), or null when the server would refuse it.
inline std::unique_ptr<engine::Trainer> SmallTrainer(const engine::proto::ModelSpec& spec,
                                                     const engine::proto::RuleSet& rules,
                                                     const engine::proto::OptimizerConfig& opt,
                                                     uint64_t seed) {
  absl::StatusOr<engine::ModelFootprint> f = engine::Model::Estimate(spec);
  if (!f.ok() || engine::SessionBytes(*f, opt) > kBudgetBytes ||
      engine::StepBytes(*f, kBatch, /*training=*/true) > kBudgetBytes) {
    return nullptr;
  }
  absl::StatusOr<std::unique_ptr<engine::Trainer>> t =
      engine::Trainer::Create(spec, rules, opt, seed, MakeReferenceBackend());
  return t.ok() ? std::move(*t) : nullptr;
}

inline bool SameState(const std::map<std::string, Tensor>& a,
                      const std::map<std::string, Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.shape() != t.shape() || it->second.dtype() != t.dtype() ||
        std::memcmp(it->second.raw(), t.raw(), t.nbytes()) != 0) {
      return false;
    }
  }
  return true;
}

}  // namespace qtrain::fuzz
