// qtrain ptq: the post-training quantization job in one command — import a float model made
// elsewhere, measure it, calibrate, measure again side by side, optionally choose mixed
// precision within a budget, export.
#include <cstdio>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "client/cli/interrupt.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {
namespace {

nlohmann::json MetricsJson(double loss, double accuracy, int64_t examples) {
  return {{"loss", loss}, {"accuracy", accuracy}, {"examples", examples}};
}

std::string Row(const std::string& label, double loss, double accuracy) {
  return absl::StrFormat("  %-28s %8.4f %9s\n", label, loss,
                         accuracy >= 0 ? absl::StrFormat("%.4f", accuracy) : "-");
}

// The ptq row's label: "ptq (srq-int8)" for a preset; a JSON file by its name; inline JSON
// briefly, so that the table keeps its columns.
std::string RulesLabel() {
  const std::string rules = absl::GetFlag(FLAGS_rules);
  if (rules.empty()) return "ptq (srq-int8)";
  if (rules.find('{') == std::string::npos) {
    const size_t slash = rules.rfind('/');
    const std::string name = slash == std::string::npos ? rules : rules.substr(slash + 1);
    return absl::StrCat("ptq (", name.size() <= 20 ? name : name.substr(0, 17) + "...", ")");
  }
  return "ptq (rules from --rules)";
}

}  // namespace

int Ptq(Invocation& inv) {
  InterruptGuard interrupt;
  v1::CreateSessionRequest config;
  if (int rc = SessionConfigFromFlags(inv, config); rc != kOk) return rc;
  const std::string weights = absl::GetFlag(FLAGS_weights);
  const std::string out = absl::GetFlag(FLAGS_out);
  if (weights.empty()) return Usage(inv, "ptq needs --weights=FILE.safetensors");
  if (out.empty()) return Usage(inv, "ptq needs --out=DIR for the exported model");
  if (absl::GetFlag(FLAGS_data).empty()) return Usage(inv, "ptq needs --data");
  // Every output path is checked before any work, so that a long job does not fail at its end.
  if (std::string why = CheckOutputDir("out", out); !why.empty()) return Usage(inv, why);
  std::vector<std::string> formats =
      absl::StrSplit(absl::GetFlag(FLAGS_exports), ',', absl::SkipWhitespace());
  for (const std::string& f : formats) {
    if (f != "compressed-tensors" && f != "onnx") {
      return Usage(inv, absl::StrCat("--exports: \"", f, "\" is not compressed-tensors or onnx"));
    }
  }
  const int64_t calibration_batches = absl::GetFlag(FLAGS_calibration_batches);
  if (calibration_batches < 1) return Usage(inv, "--calibration_batches must be >= 1");
  // The PTQ rules apply after the float model is measured; the session starts float.
  absl::StatusOr<v1::RuleSet> rules =
      absl::GetFlag(FLAGS_rules).empty() ? RulesFromFlag("srq-int8") : config.rules();
  if (!rules.ok()) return Usage(inv, std::string(rules.status().message()));
  config.clear_rules();
  v1::SensitivityOptions options;
  if (int rc = SensitivityOptionsFromFlags(inv, &options); rc != kOk) return rc;
  options.clear_rules();  // the session's: the PTQ rules by then
  const bool search = options.max_accuracy_drop() > 0 || options.max_loss_increase() > 0;

  auto calibration = LoadDataFromFlags();
  if (!calibration.ok()) return Usage(inv, std::string(calibration.status().message()));
  auto held_out =
      LoadDataFromFlags(absl::GetFlag(FLAGS_eval_data), absl::GetFlag(FLAGS_eval_split));
  if (!held_out.ok()) {
    return Usage(inv, absl::StrCat("held-out data: ", held_out.status().message()));
  }
  if (!held_out->has_targets()) return Usage(inv, "ptq needs labelled held-out data");
  const bool text = !inv.json;
  if (text) {
    std::printf("calibration data: %s\nheld-out data: %s\n", calibration->description.c_str(),
                held_out->description.c_str());
  }

  v1::ImportRequest first;
  first.set_session_id(config.session_id());
  if (config.has_architecture()) {
    *first.mutable_architecture() = config.architecture();
  } else {
    *first.mutable_model() = config.model();
  }
  *first.mutable_optimizer() = config.optimizer();
  first.set_seed(config.seed());
  if (absl::Status s = ModuleMapFromFlag(first.mutable_module_map()); !s.ok()) {
    return Usage(inv, std::string(s.message()));
  }
  auto session = inv.client->ImportWeights(first, weights);
  if (!session.ok()) return Fail(inv, "ptq: import", session.status());
  const std::string id = session->session_id();
  if (text)
    std::printf("imported session %s (%lld parameters)\n", id.c_str(),
                static_cast<long long>(session->parameters()));

  // From here on a failure prints what was measured and deletes the session the job made.
  nlohmann::json measured = {{"session_id", id}};
  auto fail = [&](const std::string& what, const absl::Status& status) {
    if (text && measured.contains("float")) {
      std::printf("\nmeasured before the failure (%lld held-out examples):\n",
                  static_cast<long long>(measured["float"]["examples"].get<int64_t>()));
      std::printf("  %-28s %8s %9s\n", "model", "loss", "accuracy");
      for (const char* key : {"float", "ptq"}) {
        if (!measured.contains(key)) continue;
        const nlohmann::json& m = measured[key];
        std::printf("%s", Row(key == std::string("float") ? "float (imported)" : RulesLabel(),
                              m["loss"].get<double>(), m["accuracy"].get<double>())
                              .c_str());
      }
    }
    if (absl::Status d = inv.client->DeleteSession(id); d.ok()) {
      measured["session_deleted"] = true;
      if (text) std::printf("deleted session %s (the job did not finish)\n", id.c_str());
    } else {
      measured["session_deleted"] = false;
      std::fprintf(stderr, "qtrain: kept session %s: deleting it failed: %s\n", id.c_str(),
                   std::string(d.message()).c_str());
    }
    std::fflush(stdout);
    return Fail(inv, what, status, measured);
  };

  const int64_t batch = absl::GetFlag(FLAGS_batch_size);
  auto evaluate = [&]() {
    client::BatchIterator it(*held_out, batch, 1, false, 0, 0);
    return inv.client->Evaluate(id, [&](v1::Batch* b) { return it.NextBatch(b); });
  };
  auto float_metrics = evaluate();
  if (!float_metrics.ok()) return fail("ptq: evaluate the float model", float_metrics.status());
  measured["float"] =
      MetricsJson(float_metrics->loss(), float_metrics->accuracy(), float_metrics->examples());
  if (auto s = inv.client->UpdateRules(id, *rules); !s.ok()) return fail("ptq: rules", s.status());
  client::BatchIterator calib(*calibration, batch, 1, true, absl::GetFlag(FLAGS_seed),
                              calibration_batches);
  auto stats = inv.client->Calibrate(
      id, [&](v1::Tensor* t) { return !InterruptGuard::interrupted() && calib.NextInputs(t); });
  if (!stats.ok()) return fail("ptq: calibrate", stats.status());
  auto ptq_metrics = evaluate();
  if (!ptq_metrics.ok()) return fail("ptq: evaluate the PTQ model", ptq_metrics.status());
  measured["ptq"] =
      MetricsJson(ptq_metrics->loss(), ptq_metrics->accuracy(), ptq_metrics->examples());

  std::optional<v1::SensitivityReport> report;
  if (search) {
    client::BatchIterator it(*held_out, batch, 1, false, 0, 0);
    auto r = inv.client->AnalyzeSensitivity(
        id, options, [&](v1::Batch* b) { return it.NextBatch(b); },
        [&](const v1::SensitivityResponse& p) {
          if (text && p.evaluations() > 0) {
            std::printf("[%d/%d] %s\n", p.evaluations(), p.planned(), p.evaluated().c_str());
          }
        });
    if (!r.ok()) return fail("ptq: sensitivity", r.status());
    report = *r;
    if (auto s = inv.client->UpdateRules(id, report->mixed_precision().rules()); !s.ok()) {
      return fail("ptq: mixed-precision rules", s.status());
    }
  }

  nlohmann::json files = nlohmann::json::array();
  for (const std::string& f : formats) {
    auto e = ExportFiles(inv, id, f, out);
    if (!e.ok()) return fail(absl::StrCat("ptq: export ", f), e.status());
    files.push_back(*e);
  }

  if (inv.json) {
    nlohmann::json j = {
        {"session_id", id},
        {"float",
         MetricsJson(float_metrics->loss(), float_metrics->accuracy(), float_metrics->examples())},
        {"ptq", MetricsJson(ptq_metrics->loss(), ptq_metrics->accuracy(), ptq_metrics->examples())},
        {"exports", files}};
    if (report) {
      const v1::SensitivityMetrics& m = report->mixed_precision().metrics();
      j["mixed_precision"] = MetricsJson(m.loss(), m.accuracy(), m.examples());
      j["mixed_precision"]["within_budget"] = report->mixed_precision().within_budget();
      nlohmann::json choices = nlohmann::json::object();
      for (const v1::OpChoice& c : report->mixed_precision().choices()) {
        choices[absl::StrCat(c.module_path(), " ", c.op_name())] = c.qtype();
      }
      j["mixed_precision"]["choices"] = choices;
    }
    std::printf("%s\n", j.dump().c_str());
    return InterruptGuard::ExitCode(inv);
  }
  std::printf("\nptq of session %s over %lld held-out examples:\n", id.c_str(),
              static_cast<long long>(float_metrics->examples()));
  std::printf("  %-28s %8s %9s\n", "model", "loss", "accuracy");
  std::printf("%s",
              Row("float (imported)", float_metrics->loss(), float_metrics->accuracy()).c_str());
  std::printf("%s", Row(RulesLabel(), ptq_metrics->loss(), ptq_metrics->accuracy()).c_str());
  if (report) {
    const v1::MixedPrecision& mp = report->mixed_precision();
    std::printf("%s", Row(mp.within_budget() ? "mixed precision" : "mixed precision (over budget)",
                          mp.metrics().loss(), mp.metrics().accuracy())
                          .c_str());
    for (const v1::OpChoice& c : mp.choices()) {
      std::printf("    %-32s %s\n", absl::StrCat(c.module_path(), " ", c.op_name()).c_str(),
                  c.qtype().c_str());
    }
  }
  for (const nlohmann::json& e : files) std::printf("exported %s\n", DescribeExport(e).c_str());
  return InterruptGuard::ExitCode(inv);
}

}  // namespace qtrain::cli
