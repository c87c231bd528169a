// session create|get|list|delete, rules set, stats, checkpoint save|pull|push, health, info.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "client/cli/output.h"
#include "client/cli/presets.h"
#include "client/data/dataset.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {
namespace {

std::string DescribeRule(const v1::Session& s, int index, const std::string& op_id) {
  if (index < 0 || index >= s.rules().rules_size()) return "float";
  const v1::QuantRule& r = s.rules().rules(index);
  if (r.weight_qtype().empty()) return absl::StrCat("rule ", index, ": float");
  std::string out = absl::StrCat("rule ", index, ": ", r.bwd_qtype().empty() ? "QAT" : "QT",
                                 " weights ", r.weight_qtype());
  if (!r.act_qtype().empty()) absl::StrAppend(&out, ", activations ", r.act_qtype());
  if (r.act_static_scale()) absl::StrAppend(&out, " (static scale)");
  if (!r.bwd_qtype().empty()) {
    // The convolution backward is float whatever bwd_qtype says (numerics.md §5.2).
    if (absl::StartsWith(op_id, "conv_general_dilated")) {
      absl::StrAppend(&out, ", gradients float (convolutions have no QT backward)");
    } else {
      absl::StrAppend(&out, ", gradients ", r.bwd_qtype());
    }
  }
  return out;
}

// "adamw lr 0.001", "sgd momentum 0.9 lr 0.05 warmup_cosine".
std::string DescribeOptimizer(const v1::OptimizerConfig& o) {
  std::string out = o.has_sgd() ? "sgd" : "adamw";
  if (o.has_sgd() && o.sgd().momentum() > 0)
    absl::StrAppend(&out, " momentum ", o.sgd().momentum());
  if (o.schedule().learning_rate() > 0) absl::StrAppend(&out, " lr ", o.schedule().learning_rate());
  if (o.schedule().kind() != v1::LrSchedule::CONSTANT) {
    absl::StrAppend(&out, " ",
                    absl::AsciiStrToLower(v1::LrSchedule::Kind_Name(o.schedule().kind())));
  }
  return out;
}

}  // namespace

void PrintSession(const Invocation& inv, const v1::Session& s) {
  if (inv.json) {
    PrintJson(s);
    return;
  }
  const std::string state =
      s.non_trainable() > 0 ? absl::StrCat(" (+", s.non_trainable(), " non-trainable)") : "";
  std::string ranks =
      s.world_size() > 1 ? absl::StrCat(", data-parallel over ", s.world_size(), " ranks") : "";
  if (!s.backend().empty() && s.backend() != "onednn") {  // the usual one goes unsaid
    absl::StrAppend(&ranks, ", on the ", s.backend(), " backend");
  }
  std::printf("session %s: step %lld, %lld parameters%s, %d rule%s, %s%s\n", s.session_id().c_str(),
              static_cast<long long>(s.step()), static_cast<long long>(s.parameters()),
              state.c_str(), s.rules().rules_size(), s.rules().rules_size() == 1 ? "" : "s",
              DescribeOptimizer(s.optimizer()).c_str(), ranks.c_str());
  Table t({"  op", "quantization"});
  for (const auto& op : s.ops()) {
    t.Add({absl::StrCat("  ", op.module_path(), ":", op.op_id()),
           DescribeRule(s, op.rule_index(), op.op_id())});
  }
  t.Print();
  for (int unused : s.unused_rules()) {
    std::printf("  warning: rule %d matches no op\n", unused);
  }
}

namespace {

std::string FloatsSummary(const v1::Tensor& t) {
  const size_t n = t.data().size() / sizeof(float);
  if (n == 0) return "-";
  std::vector<float> v(n);
  std::memcpy(v.data(), t.data().data(), n * sizeof(float));
  if (n == 1) return Num(v[0]);
  auto [lo, hi] = std::minmax_element(v.begin(), v.end());
  return absl::StrCat(Num(*lo), "..", Num(*hi), " (", n, " values)");
}

bool IsDirectory(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// Why `path` cannot be a safetensors file (unreadable, too short, a header length beyond the
// file, no JSON header), or "". The server checks the rest; this keeps local mistakes local.
std::string NotSafetensors(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return absl::StrCat("cannot read ", path, ": ", std::strerror(errno));
  unsigned char head[9] = {};
  const size_t n = std::fread(head, 1, sizeof head, f);
  std::fseek(f, 0, SEEK_END);
  const long size = std::ftell(f);
  std::fclose(f);
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = header << 8 | head[i];  // little-endian u64
  if (n < sizeof head || size < 0 || header > static_cast<uint64_t>(size) - 8 || head[8] != '{') {
    return absl::StrCat(path, " is not a safetensors checkpoint (", size,
                        " bytes; expected an 8-byte header length and a JSON header)");
  }
  return "";
}

}  // namespace

absl::StatusOr<v1::RuleSet> RulesFromFlag(const std::string& value) {
  if (IsRulesPreset(value)) return RulesPreset(value);
  if (value.find('{') == std::string::npos && access(value.c_str(), F_OK) != 0) {
    if (value.find('/') != std::string::npos || value.find('.') != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat("--rules: cannot open ", value));
    }
    return RulesPreset(value);  // neither JSON nor a file: say which presets exist
  }
  v1::RuleSet rules;
  absl::Status s = LoadJsonMessage("rules", value, &rules);
  if (!s.ok()) return s;
  return rules;
}

void PrintQuantStats(const v1::QuantStats& stats) {
  std::printf("quant stats of session %s at step %lld\n", stats.session_id().c_str(),
              static_cast<long long>(stats.step()));
  if (stats.stats_size() == 0) {
    std::printf(
        "  none yet: ops under a rule with act_static_scale collect them while they train "
        "or calibrate (e.g. qtrain calibrate %s --data=D --rules=srq-int8)\n",
        stats.session_id().c_str());
    return;
  }
  Table t({"module", "stat", "count", "qtype", "scale", "zero_point"});
  for (const auto& s : stats.stats()) {
    t.Add({s.module_path(), s.name(), absl::StrCat(s.count()), s.qtype().empty() ? "-" : s.qtype(),
           s.scale_error().empty() ? FloatsSummary(s.scale()) : s.scale_error(),
           FloatsSummary(s.zero_point())});
  }
  t.Print();
}

// A new session's configuration from --preset / --model, --rules, --optimizer, --lr, --seed and
// the preset options (session create, import). kOk, or the usage error's exit code.
int SessionConfigFromFlags(Invocation& inv, v1::CreateSessionRequest& req) {
  req.set_session_id(Arg(inv, 0));
  req.set_seed(absl::GetFlag(FLAGS_seed));
  const std::string preset = absl::GetFlag(FLAGS_preset), model = absl::GetFlag(FLAGS_model);
  const std::string arch = absl::GetFlag(FLAGS_arch), hf = absl::GetFlag(FLAGS_hf);
  const int sources = !preset.empty() + !model.empty() + !arch.empty() + !hf.empty();
  if (sources != 1) {
    return Usage(
        inv, absl::StrCat(inv.command, sources == 0
                                           ? " needs --preset=mlp|cnn|transformer-lm, --model, "
                                             "--arch or --hf"
                                           : " takes one of --preset, --model, --arch and --hf"));
  }
  // The options each source reads; any other given is a mistake, not a no-op.
  std::vector<std::string> arch_reads = {"input_shape", "arch_options"};
  arch_reads.insert(arch_reads.end(), std::begin(kArchOptionFlags), std::end(kArchOptionFlags));
  const std::vector<std::string> reads =
      !model.empty()               ? std::vector<std::string>{}
      : !hf.empty()                ? std::vector<std::string>{"seq_len", "arch_options"}
      : !arch.empty()              ? arch_reads
      : preset == "transformer-lm" ? std::vector<std::string>{"seq_len"}
                                   : std::vector<std::string>{"classes", "input_shape"};
  std::vector<std::string> shaping = {"classes", "seq_len"};
  shaping.insert(shaping.end(), arch_reads.begin(), arch_reads.end());
  for (const std::string& flag : shaping) {
    if (Given(inv, flag) && std::find(reads.begin(), reads.end(), flag) == reads.end()) {
      return Usage(inv, absl::StrCat("--", flag, " does not shape ",
                                     !preset.empty() ? absl::StrCat("--preset=", preset)
                                     : !arch.empty() ? absl::StrCat("--arch=", arch)
                                     : !hf.empty()   ? absl::StrCat("--hf=", hf)
                                                     : "a --model spec (set it in the spec)"));
    }
  }
  if (!(absl::GetFlag(FLAGS_lr) > 0)) {
    return Usage(inv, absl::StrCat("--lr=", absl::GetFlag(FLAGS_lr), " must be > 0"));
  }
  if (!model.empty()) {
    absl::Status s = LoadJsonMessage("model", model, req.mutable_model());
    if (!s.ok()) return Usage(inv, std::string(s.message()));
  } else if (!hf.empty()) {
    // The server builds the model from config.json and names every field it does not implement.
    std::ifstream in(hf + "/config.json");
    if (!in) return Usage(inv, absl::StrCat("--hf=", hf, ": no readable config.json there"));
    std::stringstream text;
    text << in.rdbuf();
    v1::Architecture* a = req.mutable_architecture();
    a->set_name("hf");
    a->set_hf_config(text.str());
    if (Given(inv, "seq_len")) a->add_input_shape(absl::GetFlag(FLAGS_seq_len));
    auto options = ArchOptionsFromFlags(inv);  // pad_id=N
    if (!options.ok()) return Usage(inv, std::string(options.status().message()));
    a->mutable_options()->insert(options->begin(), options->end());
  } else if (!arch.empty()) {
    // The server expands it and names every problem (unknown architecture or option).
    v1::Architecture* a = req.mutable_architecture();
    a->set_name(arch);
    auto options = ArchOptionsFromFlags(inv);
    if (!options.ok()) return Usage(inv, std::string(options.status().message()));
    a->mutable_options()->insert(options->begin(), options->end());
    auto shape = InputShapeFromFlag();
    if (!shape.ok()) return Usage(inv, std::string(shape.status().message()));
    for (int64_t d : *shape) a->add_input_shape(d);
  } else {
    PresetOptions o;
    o.classes = absl::GetFlag(FLAGS_classes);
    o.seq_len = absl::GetFlag(FLAGS_seq_len);
    auto shape = InputShapeFromFlag();
    if (!shape.ok()) return Usage(inv, std::string(shape.status().message()));
    if (!shape->empty()) o.input_shape = *shape;
    auto spec = ModelPreset(preset, o);
    if (!spec.ok()) return Usage(inv, std::string(spec.status().message()));
    *req.mutable_model() = *spec;
  }
  if (!absl::GetFlag(FLAGS_rules).empty()) {
    auto rules = RulesFromFlag(absl::GetFlag(FLAGS_rules));
    if (!rules.ok()) return Usage(inv, std::string(rules.status().message()));
    *req.mutable_rules() = *rules;
  }
  const std::string optimizer = absl::GetFlag(FLAGS_optimizer);
  if (IsOptimizerPreset(optimizer) ||
      (optimizer.find('{') == std::string::npos && access(optimizer.c_str(), F_OK) != 0)) {
    auto o = OptimizerPreset(optimizer, absl::GetFlag(FLAGS_lr));
    if (!o.ok()) return Usage(inv, std::string(o.status().message()));
    *req.mutable_optimizer() = *o;
  } else {
    if (Given(inv, "lr")) {
      return Usage(inv,
                   "--lr sets the presets' learning rate; in a JSON --optimizer, set "
                   "schedule.learning_rate");
    }
    absl::Status s = LoadJsonMessage("optimizer", optimizer, req.mutable_optimizer());
    if (!s.ok()) return Usage(inv, std::string(s.message()));
  }
  return kOk;
}

int SessionCreate(Invocation& inv) {
  v1::CreateSessionRequest req;
  if (int rc = SessionConfigFromFlags(inv, req); rc != kOk) return rc;
  if (Given(inv, "world_size")) {
    req.mutable_data_parallel()->set_world_size(absl::GetFlag(FLAGS_world_size));
  }
  req.set_backend(absl::GetFlag(FLAGS_backend));
  auto s = inv.client->CreateSession(req);
  if (!s.ok()) return Fail(inv, "session create", s.status());
  PrintSession(inv, *s);
  return kOk;
}

int SessionGet(Invocation& inv) {
  auto s = inv.client->GetSession(Arg(inv, 0));
  if (!s.ok()) return Fail(inv, "session get", s.status());
  PrintSession(inv, *s);
  return kOk;
}

int SessionList(Invocation& inv) {
  auto list = inv.client->ListSessions();
  if (!list.ok()) return Fail(inv, "session list", list.status());
  if (inv.json) {
    PrintJson(*list);
    return kOk;
  }
  Table t({"session", "step", "parameters", "non-trainable"});
  for (const auto& s : list->sessions()) {
    t.Add({s.session_id(), absl::StrCat(s.step()), absl::StrCat(s.parameters()),
           absl::StrCat(s.non_trainable())});
  }
  t.Print();
  return kOk;
}

int SessionDelete(Invocation& inv) {
  absl::Status s = inv.client->DeleteSession(Arg(inv, 0));
  if (!s.ok()) return Fail(inv, "session delete", s);
  if (inv.json) {
    std::printf("%s\n", nlohmann::json({{"deleted", Arg(inv, 0)}}).dump().c_str());
  } else {
    std::printf("deleted session %s\n", Arg(inv, 0).c_str());
  }
  return kOk;
}

int RulesSet(Invocation& inv) {
  if (inv.args.size() > 1 && Given(inv, "rules")) {
    return Usage(inv, "rules set takes RULES or --rules, not both");
  }
  const std::string value = inv.args.size() > 1 ? inv.args[1] : absl::GetFlag(FLAGS_rules);
  if (value.empty()) return Usage(inv, "rules set SESSION needs RULES (a preset, JSON or a file)");
  auto rules = RulesFromFlag(value);
  if (!rules.ok()) return Usage(inv, std::string(rules.status().message()));
  auto s = inv.client->UpdateRules(Arg(inv, 0), *rules);
  if (!s.ok()) return Fail(inv, "rules set", s.status());
  PrintSession(inv, *s);
  return kOk;
}

int Stats(Invocation& inv) {
  auto stats = inv.client->GetQuantStats(Arg(inv, 0));
  if (!stats.ok()) return Fail(inv, "stats", stats.status());
  if (inv.json) {
    PrintJson(*stats);
  } else {
    PrintQuantStats(*stats);
  }
  return kOk;
}

int CheckpointSave(Invocation& inv) {
  auto info = inv.client->SaveCheckpoint(Arg(inv, 0));
  if (!info.ok()) return Fail(inv, "checkpoint save", info.status());
  if (inv.json) {
    PrintJson(*info);
  } else {
    std::printf("saved session %s at step %lld on the server: %s (%lld bytes, crc32 %s)\n",
                info->session_id().c_str(), static_cast<long long>(info->step()),
                info->path().c_str(), static_cast<long long>(info->bytes()), info->crc32().c_str());
  }
  return kOk;
}

int CheckpointPull(Invocation& inv) {
  // A target we cannot write is a local error, found before the download starts.
  if (IsDirectory(inv.args[1])) {
    return Usage(inv, absl::StrCat(inv.args[1], " is a directory; name the file to write"));
  }
  const std::string part = absl::StrCat(inv.args[1], ".part");
  if (FILE* f = std::fopen(part.c_str(), "wb")) {
    std::fclose(f);
    std::remove(part.c_str());
  } else {
    return Usage(inv, absl::StrCat("cannot write ", part, ": ", std::strerror(errno)));
  }
  auto bytes = inv.client->DownloadCheckpoint(inv.args[0], inv.args[1]);
  if (!bytes.ok()) return Fail(inv, "checkpoint pull", bytes.status());
  if (inv.json) {
    std::printf("%s\n", nlohmann::json(
                            {{"session_id", inv.args[0]}, {"path", inv.args[1]}, {"bytes", *bytes}})
                            .dump()
                            .c_str());
  } else {
    std::printf("pulled session %s into %s (%lld bytes, safetensors)\n", inv.args[0].c_str(),
                inv.args[1].c_str(), static_cast<long long>(*bytes));
  }
  return kOk;
}

int CheckpointPush(Invocation& inv) {
  if (IsDirectory(inv.args[1])) {
    return Usage(inv, absl::StrCat(inv.args[1], " is a directory, not a checkpoint file"));
  }
  if (std::string bad = NotSafetensors(inv.args[1]); !bad.empty()) return Usage(inv, bad);
  auto info = inv.client->UploadCheckpoint(inv.args[0], inv.args[1]);
  if (!info.ok()) return Fail(inv, "checkpoint push", info.status());
  if (inv.json) {
    PrintJson(*info);
  } else {
    std::printf("pushed %s into session %s at step %lld (%lld bytes, crc32 %s)\n",
                inv.args[1].c_str(), info->session_id().c_str(),
                static_cast<long long>(info->step()), static_cast<long long>(info->bytes()),
                info->crc32().c_str());
  }
  return kOk;
}

int Health(Invocation& inv) {
  const double timeout = absl::GetFlag(FLAGS_timeout);
  if (!(timeout > 0)) return Usage(inv, absl::StrCat("--timeout=", timeout, " must be > 0"));
  auto status = inv.client->Health(absl::GetFlag(FLAGS_service), absl::Seconds(timeout));
  if (status.status().code() == absl::StatusCode::kNotFound) {
    status = std::string("SERVICE_UNKNOWN");  // the server does not know --service
  }
  if (!status.ok()) return Fail(inv, "health", status.status());
  if (inv.json) {
    std::printf("%s\n", nlohmann::json({{"status", *status}}).dump().c_str());
  } else {
    std::printf("%s\n", status->c_str());
  }
  return *status == "SERVING" ? kOk : kNotServing;
}

namespace {

// Each op and what runs it (v1::Int8Kernel or v1::Implementation), with `verbose` every
// candidate, + when it could run the op, and why.
template <typename Choices>
void PrintChoices(const Choices& choices, int op_width, bool verbose) {
  for (const auto& k : choices) {
    std::printf("  %-*s %s\n", op_width, k.op().c_str(), k.chosen().c_str());
    if (!verbose) continue;
    for (const auto& c : k.candidates()) {
      std::printf("    %s %-34s %s\n", c.supported() ? "+" : "-", c.name().c_str(),
                  c.reason().c_str());
    }
  }
}

}  // namespace

int Info(Invocation& inv) {
  auto info = inv.client->GetServerInfo();
  if (!info.ok()) return Fail(inv, "info", info.status());
  if (inv.json) {
    PrintJson(*info);
    return kOk;
  }
  std::printf("server    qtrain %s, %d thread(s) per session\n", info->version().c_str(),
              info->threads_per_session());
  std::printf("cpu       %s\n", info->cpu().c_str());
  std::printf("isa       %s", info->active_isa().c_str());
  if (info->active_isa() != info->detected_isa()) {
    std::printf(" (the CPU runs %s; capped by QTRAIN_MAX_ISA=%s)", info->detected_isa().c_str(),
                info->isa_cap().c_str());
  }
  std::printf("\nint8 kernels\n");
  const bool verbose = absl::GetFlag(FLAGS_verbose);
  PrintChoices(info->int8_kernels(), 36, verbose);
  std::printf("backends\n");
  for (const v1::BackendInfo& b : info->backends()) {
    std::printf("  %-10s %-6s %s\n", b.name().c_str(), b.device().c_str(), b.description().c_str());
  }
  std::printf("devices\n");
  for (const v1::DeviceInfo& d : info->devices()) {
    const auto mib = [](int64_t bytes) { return absl::StrFormat("%.1f MiB", bytes / 1048576.0); };
    std::printf("  %-10s memory budget %s, %s reserved\n", d.name().c_str(),
                d.memory_budget_bytes() > 0 ? mib(d.memory_budget_bytes()).c_str() : "unlimited",
                mib(d.memory_reserved_bytes()).c_str());
  }
  std::printf("float kernels (matmul policy %s)\n", info->float_gemm().c_str());
  PrintChoices(info->implementations(), 44, verbose);
  return kOk;
}

}  // namespace qtrain::cli
