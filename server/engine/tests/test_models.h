// Helpers for engine tests: specs and rules from JSON (protobuf's JSON mapping, as users write
// them), and trainers on the oneDNN or reference backend.
#pragma once

#include <memory>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "server/engine/trainer.h"

namespace qtrain::engine::testing {

template <typename Message>
Message FromJson(const std::string& json) {
  Message m;
  auto status = google::protobuf::util::JsonStringToMessage(json, &m);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\n" << json;
  return m;
}

inline std::unique_ptr<Backend> OnednnBackend() {
  auto b = MakeOnednnBackend();
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? std::move(*b) : nullptr;
}

// An int8 QAT rule set (weights and activations), or QT with bwd_qtype int8.
inline proto::RuleSet Int8Rules(bool qt) {
  return FromJson<proto::RuleSet>(
      std::string(R"({"rules": [{"module_path": ".*", "weight_qtype": "int8",
                                 "act_qtype": "int8")") +
      (qt ? R"(, "bwd_qtype": "int8")" : "") + "}]}");
}

}  // namespace qtrain::engine::testing
