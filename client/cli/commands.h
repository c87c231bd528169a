// The subcommands of `qtrain`. Each takes the invocation (connection, --json, positional
// arguments after the command words, already counted against the command table) and returns
// the process exit code (cli.h).
#pragma once

#include <string>

#include "client/cli/cli.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {

int SessionCreate(Invocation& inv);
int SessionGet(Invocation& inv);
int SessionList(Invocation& inv);
int SessionDelete(Invocation& inv);
int Import(Invocation& inv);
int Export(Invocation& inv);
int RulesSet(Invocation& inv);
int Stats(Invocation& inv);
int CheckpointSave(Invocation& inv);
int CheckpointPull(Invocation& inv);
int CheckpointPush(Invocation& inv);
int Health(Invocation& inv);
int Info(Invocation& inv);

int Train(Invocation& inv);
int Eval(Invocation& inv);
int Calibrate(Invocation& inv);
int Forward(Invocation& inv);
int Sensitivity(Invocation& inv);
int Ptq(Invocation& inv);

int Rebalance(Invocation& inv);

int TokenNew(Invocation& inv);
int TokenHash(Invocation& inv);

// Helpers shared by the command files.
void PrintSession(const Invocation& inv, const v1::Session& s);
// A new session's configuration from --preset / --model, --rules, --optimizer, --lr, --seed and
// the preset options. kOk, or the usage error's exit code.
int SessionConfigFromFlags(Invocation& inv, v1::CreateSessionRequest& req);
// --map (a JSON object inline or in a file) into `out`; InvalidArgument naming --map.
absl::Status ModuleMapFromFlag(google::protobuf::Map<std::string, std::string>* out);
// Exports `session` in `format` ("compressed-tensors" or "onnx") into `dir` (created when
// missing): the files written, as JSON. The server's errors, or InvalidArgument for `dir`.
absl::StatusOr<nlohmann::json> ExportFiles(Invocation& inv, const std::string& session,
                                           const std::string& format, const std::string& dir);
// One line naming ExportFiles' files.
std::string DescribeExport(const nlohmann::json& exported);
void PrintQuantStats(const v1::QuantStats& stats);
// --rules as a preset name, inline JSON or a JSON file.
absl::StatusOr<v1::RuleSet> RulesFromFlag(const std::string& value);
// --rules, --qtypes, --max_accuracy_drop, --max_loss_increase, --skip_all_but_one into
// `options`; kOk or a usage error's exit code.
int SensitivityOptionsFromFlags(const Invocation& inv, v1::SensitivityOptions* options);
// The report as text: float and quantized metrics, the per-op table, the mixed-precision choice.
void PrintSensitivity(const v1::SensitivityReport& report);

}  // namespace qtrain::cli
