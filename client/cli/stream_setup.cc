#include "client/cli/stream_setup.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "client/cli/interrupt.h"

namespace qtrain::cli {
namespace {

// The first counting flag out of range, as a usage message naming it; "" when all are fine.
std::string BadCount() {
  const std::pair<const char*, int64_t> at_least_one[] = {
      {"epochs", absl::GetFlag(FLAGS_epochs)}, {"batch_size", absl::GetFlag(FLAGS_batch_size)}};
  for (const auto& [flag, v] : at_least_one) {
    if (v < 1) return absl::StrCat("--", flag, "=", v, " must be >= 1");
  }
  const std::pair<const char*, int64_t> not_negative[] = {
      {"steps", absl::GetFlag(FLAGS_steps)},
      {"limit", absl::GetFlag(FLAGS_limit)},
      {"log_every", absl::GetFlag(FLAGS_log_every)}};
  for (const auto& [flag, v] : not_negative) {
    if (v < 0) {
      return absl::StrCat("--", flag, "=", v, " must be >= 0 (0: ",
                          std::string(flag) == "log_every" ? "about 10 lines" : "all", ")");
    }
  }
  return "";
}

// A --data flag given on the command line that the loaded format never reads, as a usage
// message ("--seq_len does not apply to IDX data (PATH)"); "" when none.
std::string UnreadDataFlag(const Invocation& inv, const client::Dataset& data) {
  static const auto* unread = new std::map<std::string, std::vector<std::string>>{
      {"idx",
       {"label_column", "targets", "input_shape", "seq_len", "tokenizer", "token_dtype",
        "sequences"}},
      {"csv", {"split", "labels", "seq_len", "tokenizer", "token_dtype", "sequences"}},
      {"text",
       {"split", "labels", "label_column", "targets", "input_shape", "input_scale", "token_dtype"}},
      {"npy",
       {"split", "labels", "label_column", "targets", "input_shape", "input_scale", "tokenizer",
        "token_dtype", "sequences"}},
      {"bin",
       {"split", "labels", "label_column", "targets", "input_shape", "input_scale", "tokenizer",
        "sequences"}},
  };
  auto it = unread->find(data.format);
  if (it == unread->end()) return "";
  std::vector<std::string> flags = it->second;
  // --split picks the files of an IDX directory; an IDX file has no splits.
  if (data.format == "idx" && !std::filesystem::is_directory(absl::GetFlag(FLAGS_data))) {
    flags.push_back("split");
  }
  for (const std::string& flag : flags) {
    if (Given(inv, flag)) {
      return absl::StrCat("--", flag, " does not apply to ", absl::AsciiStrToUpper(data.format),
                          " data (", absl::GetFlag(FLAGS_data), ")");
    }
  }
  return "";
}

// --steps > 0 overrides `epochs`: as many passes over the data as the steps need.
int EpochsFor(const client::Dataset& data, int64_t steps, int epochs) {
  if (steps <= 0) return epochs;
  const int64_t batch = std::clamp<int64_t>(absl::GetFlag(FLAGS_batch_size), 1, data.size());
  const int64_t per_epoch = (data.size() + batch - 1) / batch;
  return static_cast<int>(std::min<int64_t>((steps + per_epoch - 1) / per_epoch, 1 << 30));
}

}  // namespace

StreamSetup Setup(Invocation& inv, const char* command, bool need_labels, bool apply_rules) {
  StreamSetup out;
  out.session = inv.args[0];
  // Text windows default to the session's sequence length (a token model's input shape), so a
  // session created with --seq_len=32 trains on text without repeating it.
  // A session whose loss shifts labels (HF's causal LMs) takes each window's own ids as labels.
  if (auto session = inv.client->GetSession(out.session); session.ok()) {
    SetLabelsAreInputs(session->model().loss().shift_labels());
    const auto& input = session->model().input();
    if (input.has_pad_id()) SetSessionPadId(static_cast<int32_t>(input.pad_id()));
    if (!Given(inv, "seq_len") && session->model().input().kind() == v1::InputSpec::TOKENS &&
        session->model().input().shape_size() == 1) {
      absl::SetFlag(&FLAGS_seq_len, session->model().input().shape(0));
    }
  }
  auto data = LoadDataFromFlags();
  if (!data.ok()) {
    out.exit_code = Usage(inv, std::string(data.status().message()));
    return out;
  }
  if (data->size() == 0) {
    out.exit_code = Usage(inv, absl::StrCat("--data=", absl::GetFlag(FLAGS_data), " is empty"));
    return out;
  }
  if (need_labels && !data->has_targets()) {
    out.exit_code = Usage(inv, absl::StrCat(command, " needs labelled data (--label_column)"));
    return out;
  }
  const std::string progress = absl::GetFlag(FLAGS_progress);
  if (progress != "auto" && progress != "bar" && progress != "lines" && progress != "none") {
    out.exit_code =
        Usage(inv, absl::StrCat("--progress=", progress, " is not one of auto, bar, lines, none"));
    return out;
  }
  if (std::string bad = BadCount(); !bad.empty()) {
    out.exit_code = Usage(inv, bad);
    return out;
  }
  if (std::string unread = UnreadDataFlag(inv, *data); !unread.empty()) {
    out.exit_code = Usage(inv, unread);
    return out;
  }
  if (InterruptGuard::interrupted()) {  // Ctrl-C while the data loaded
    out.exit_code = InterruptGuard::BeforeAnyBatch(inv, command);
    return out;
  }
  out.data = *std::move(data);
  if (!inv.json && absl::GetFlag(FLAGS_progress) != "none") {
    std::printf("data: %s\n", out.data.description.c_str());
  }
  // --rules with a streaming command switches the rules first (UpdateRules), as between steps.
  if (apply_rules && !absl::GetFlag(FLAGS_rules).empty()) {
    auto rules = RulesFromFlag(absl::GetFlag(FLAGS_rules));
    if (!rules.ok()) {
      out.exit_code = Usage(inv, std::string(rules.status().message()));
      return out;
    }
    auto s = inv.client->UpdateRules(out.session, *rules);
    if (!s.ok()) out.exit_code = Fail(inv, "rules set", s.status());
  }
  return out;
}

// Says how the CSV's label column was read (class indices unless some value is not one).
absl::Status WithTargetsHint(const Invocation& inv, const client::Dataset& data, absl::Status s) {
  if (s.code() != absl::StatusCode::kInvalidArgument || data.format != "csv" ||
      Given(inv, "targets") || !absl::StrContains(s.message(), "targets:")) {
    return s;
  }
  return absl::Status(
      s.code(),
      absl::StrCat(s.message(),
                   data.float_targets.empty()
                       ? " (the CSV's label column was read as class indices; --targets=float "
                         "reads it as regression targets)"
                       : " (the CSV's label column holds values that are not class indices, so "
                         "it was read as float regression targets)"));
}

client::BatchIterator StepBatches(const StreamSetup& setup, int epochs) {
  const int64_t steps = absl::GetFlag(FLAGS_steps);
  return client::BatchIterator(setup.data, absl::GetFlag(FLAGS_batch_size),
                               EpochsFor(setup.data, steps, epochs), absl::GetFlag(FLAGS_shuffle),
                               absl::GetFlag(FLAGS_seed), steps);
}

}  // namespace qtrain::cli
