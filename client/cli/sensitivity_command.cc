// qtrain sensitivity: which quantized ops cost accuracy, over held-out data, and (with a budget)
// the mixed-precision rules that stay within it.
#include <cmath>
#include <cstdio>
#include <fstream>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "client/cli/interrupt.h"
#include "client/cli/output.h"
#include "client/cli/stream_setup.h"

namespace qtrain::cli {
namespace {

std::string Metrics(const v1::SensitivityMetrics& m) {
  std::string out = absl::StrFormat("loss %.4f", m.loss());
  if (m.accuracy() >= 0) absl::StrAppend(&out, absl::StrFormat("  accuracy %.4f", m.accuracy()));
  return out;
}

// "+0.0123" / "-0.0040".
std::string Delta(double v) { return absl::StrFormat("%+.4f", v); }

}  // namespace

int SensitivityOptionsFromFlags(const Invocation& inv, v1::SensitivityOptions* options) {
  if (!absl::GetFlag(FLAGS_rules).empty()) {
    auto rules = RulesFromFlag(absl::GetFlag(FLAGS_rules));
    if (!rules.ok()) return Usage(inv, std::string(rules.status().message()));
    *options->mutable_rules() = *rules;
  }
  for (absl::string_view q :
       absl::StrSplit(absl::GetFlag(FLAGS_qtypes), ',', absl::SkipWhitespace())) {
    options->add_qtypes(std::string(q));
  }
  options->set_max_accuracy_drop(absl::GetFlag(FLAGS_max_accuracy_drop));
  options->set_max_loss_increase(absl::GetFlag(FLAGS_max_loss_increase));
  options->set_skip_all_but_one(absl::GetFlag(FLAGS_skip_all_but_one));
  return kOk;
}

void PrintSensitivity(const v1::SensitivityReport& r) {
  std::printf("  float      %s\n  quantized  %s\n", Metrics(r.float_model()).c_str(),
              Metrics(r.quantized()).c_str());
  const bool acc = r.float_model().accuracy() >= 0;
  std::vector<std::string> header = {"op", "qtype", "alone: loss"};
  if (acc) header.push_back("accuracy");
  header.push_back("left float: loss");
  if (acc) header.push_back("accuracy");
  Table t(header);
  for (const v1::OpSensitivity& op : r.ops()) {
    std::vector<std::string> row = {absl::StrCat(op.module_path(), " ", op.op_name()), op.qtype()};
    // Alone: what quantizing only this op costs; left float: what keeping it float recovers.
    const bool only = op.has_only_this(), all_but = op.has_all_but_this();
    row.push_back(only ? Delta(op.only_this().loss() - r.float_model().loss()) : "-");
    if (acc) {
      row.push_back(only ? Delta(op.only_this().accuracy() - r.float_model().accuracy()) : "-");
    }
    row.push_back(all_but ? Delta(op.all_but_this().loss() - r.quantized().loss()) : "-");
    if (acc) {
      row.push_back(all_but ? Delta(op.all_but_this().accuracy() - r.quantized().accuracy()) : "-");
    }
    t.Add(row);
  }
  t.Print();
  std::printf(
      "(alone: the change from the float model with only this op quantized; left float: "
      "the change from the quantized model with this op kept float)\n");
  if (!r.has_mixed_precision()) return;
  const v1::MixedPrecision& mp = r.mixed_precision();
  std::printf("mixed precision: %s, %s\n", Metrics(mp.metrics()).c_str(),
              mp.within_budget() ? "within the budget" : "NOT within the budget");
  for (const v1::OpChoice& c : mp.choices()) {
    std::printf("  %-32s %s\n", absl::StrCat(c.module_path(), " ", c.op_name()).c_str(),
                c.qtype().c_str());
  }
}

int Sensitivity(Invocation& inv) {
  InterruptGuard interrupt;
  v1::SensitivityOptions options;
  if (int rc = SensitivityOptionsFromFlags(inv, &options); rc != kOk) return rc;
  const std::string rules_out = absl::GetFlag(FLAGS_rules_out);
  if (!rules_out.empty() && options.max_accuracy_drop() <= 0 && options.max_loss_increase() <= 0) {
    return Usage(inv, "--rules_out needs a budget: --max_accuracy_drop or --max_loss_increase");
  }
  if (!rules_out.empty()) {
    if (std::string why = CheckOutputFile("rules_out", rules_out); !why.empty()) {
      return Usage(inv, why);
    }
  }
  StreamSetup setup = Setup(inv, "sensitivity", /*need_labels=*/true, /*apply_rules=*/false);
  if (setup.exit_code != kOk) return setup.exit_code;
  client::BatchIterator batches(setup.data, absl::GetFlag(FLAGS_batch_size), 1, false, 0,
                                absl::GetFlag(FLAGS_steps));
  const bool lines = !inv.json && absl::GetFlag(FLAGS_progress) != "none";
  int64_t sent = 0;
  auto report = inv.client->AnalyzeSensitivity(
      setup.session, options,
      [&](v1::Batch* b) {
        if (InterruptGuard::interrupted() || !batches.NextBatch(b)) return false;
        ++sent;
        return true;
      },
      [&](const v1::SensitivityResponse& r) {
        if (lines && r.evaluations() > 0) {
          std::printf("[%d/%d] %s: %s\n", r.evaluations(), r.planned(), r.evaluated().c_str(),
                      Metrics(r.metrics()).c_str());
          std::fflush(stdout);
        }
      });
  if (sent == 0 && InterruptGuard::interrupted()) {
    return InterruptGuard::BeforeAnyBatch(inv, "sensitivity");
  }
  if (!report.ok()) return Fail(inv, "sensitivity", report.status());
  if (!rules_out.empty()) {
    std::string text;
    google::protobuf::util::JsonPrintOptions o;
    o.add_whitespace = true;
    o.preserve_proto_field_names = true;
    (void)google::protobuf::util::MessageToJsonString(report->mixed_precision().rules(), &text, o);
    std::ofstream f(rules_out);
    f << text;
    if (!f.flush()) {
      return Fail(inv, "sensitivity",
                  absl::UnavailableError(absl::StrCat("cannot write --rules_out=", rules_out)));
    }
  }
  if (inv.json) {
    PrintJson(*report);
    return InterruptGuard::ExitCode(inv);
  }
  std::printf("sensitivity of session %s over %lld held-out examples:\n", setup.session.c_str(),
              static_cast<long long>(report->float_model().examples()));
  PrintSensitivity(*report);
  if (!rules_out.empty()) {
    std::printf("mixed-precision rules written to %s (apply: qtrain rules set %s %s)\n",
                rules_out.c_str(), setup.session.c_str(), rules_out.c_str());
  }
  return InterruptGuard::ExitCode(inv);
}

}  // namespace qtrain::cli
