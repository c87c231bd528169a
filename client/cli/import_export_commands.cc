// import, export: models made elsewhere in (PyTorch-named safetensors), quantized models out
// (compressed-tensors safetensors, ONNX).
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "absl/flags/flag.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "client/data/dataset.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {
namespace {

// The JSON header of a safetensors file (empty when it has none).
nlohmann::json SafetensorsHeader(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  uint64_t n = 0;
  if (!in.read(reinterpret_cast<char*>(&n), 8) || n > (uint64_t{1} << 30)) return {};
  std::string text(n, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(n))) return {};
  nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
  return j.is_discarded() ? nlohmann::json() : j;
}

}  // namespace

// --map: {"Dense_0": "0", "head": "2"}, a JSON object inline or in a file. kOk, or the usage
// error's exit code.
absl::Status ModuleMapFromFlag(google::protobuf::Map<std::string, std::string>* out) {
  const std::string map = absl::GetFlag(FLAGS_map);
  if (map.empty()) return absl::OkStatus();
  auto text = map.find('{') != std::string::npos ? absl::StatusOr<std::string>(map)
                                                 : client::ReadMaybeGzip(map);
  if (!text.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--map: ", text.status().message()));
  }
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(
        "--map must be a JSON object of qtrain module -> module in the file");
  }
  for (const auto& [module, source] : j.items()) {
    if (!source.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat("--map: \"", module, "\" must map to a string"));
    }
    (*out)[module] = source.get<std::string>();
  }
  return absl::OkStatus();
}

absl::StatusOr<nlohmann::json> ExportFiles(Invocation& inv, const std::string& session,
                                           const std::string& format, const std::string& dir) {
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot create --out=", dir, ": ", std::strerror(errno)));
  }
  v1::ExportRequest req;
  req.set_session_id(session);
  req.set_format(format);
  if (format == "onnx") {
    const std::string path = absl::StrCat(dir, "/model.onnx");
    absl::StatusOr<int64_t> bytes = inv.client->ExportQuantized(req, path);
    if (!bytes.ok()) return bytes.status();
    return nlohmann::json({{"format", format}, {"model", path}, {"bytes", *bytes}});
  }
  google::protobuf::Map<std::string, std::string> map;
  if (absl::Status s = ModuleMapFromFlag(&map); !s.ok()) return s;
  *req.mutable_module_map() = map;
  const std::string weights = absl::StrCat(dir, "/model.safetensors");
  absl::StatusOr<int64_t> bytes = inv.client->ExportQuantized(req, weights);
  if (!bytes.ok()) return bytes.status();
  // config.json: the quantization_config that vLLM and Hugging Face read beside the weights;
  // for a model imported from a Hugging Face directory, its whole config with it added.
  const nlohmann::json header = SafetensorsHeader(weights);
  const nlohmann::json metadata = header.value("__metadata__", nlohmann::json::object());
  const std::string config_text = metadata.value("quantization_config", "{}");
  const nlohmann::json config = nlohmann::json::parse(config_text, nullptr, false);
  const std::string config_path = absl::StrCat(dir, "/config.json");
  if (metadata.contains("config.json") && metadata["config.json"].is_string()) {
    std::ofstream(config_path) << metadata["config.json"].get<std::string>() << "\n";
  } else {
    std::ofstream(config_path) << nlohmann::json({{"quantization_config", config}}).dump(2) << "\n";
  }
  int quantized = 0;
  for (const auto& [name, entry] : header.items()) {
    quantized += absl::EndsWith(name, ".weight_scale");
  }
  return nlohmann::json({{"format", format},
                         {"weights", weights},
                         {"config", config_path},
                         {"bytes", *bytes},
                         {"packing", config.value("format", "")},
                         {"quantized_layers", quantized}});
}

std::string DescribeExport(const nlohmann::json& e) {
  if (e["format"] == "onnx") {
    return absl::StrCat("ONNX (QDQ, opset 17): ", e["model"].get<std::string>(), " (",
                        e["bytes"].get<int64_t>(), " bytes)");
  }
  return absl::StrCat(e["format"].get<std::string>(), " ", e["packing"].get<std::string>(), ": ",
                      e["weights"].get<std::string>(), " (", e["bytes"].get<int64_t>(), " bytes, ",
                      e["quantized_layers"].get<int>(), " quantized layers) and ",
                      e["config"].get<std::string>());
}

int Export(Invocation& inv) {
  const std::string dir = absl::GetFlag(FLAGS_out);
  const std::string format =
      absl::GetFlag(FLAGS_format).empty() ? "compressed-tensors" : absl::GetFlag(FLAGS_format);
  if (dir.empty()) return Usage(inv, "export needs --out=DIR");
  if (std::string why = CheckOutputDir("out", dir); !why.empty()) return Usage(inv, why);
  if (format == "onnx" && Given(inv, "map")) {
    return Usage(inv,
                 "--map names compressed-tensors layers; the ONNX export keeps qtrain's paths");
  }
  auto e = ExportFiles(inv, Arg(inv, 0), format, dir);
  if (!e.ok()) {
    return e.status().code() == absl::StatusCode::kInvalidArgument &&
                   absl::StartsWith(e.status().message(), "--")
               ? Usage(inv, std::string(e.status().message()))
               : Fail(inv, "export", e.status());
  }
  if (inv.json) {
    (*e)["session_id"] = Arg(inv, 0);
    std::printf("%s\n", e->dump().c_str());
  } else {
    std::printf("exported session %s as %s\n", Arg(inv, 0).c_str(), DescribeExport(*e).c_str());
  }
  return kOk;
}

int Import(Invocation& inv) {
  v1::CreateSessionRequest config;
  if (int rc = SessionConfigFromFlags(inv, config); rc != kOk) return rc;
  const std::string weights = absl::GetFlag(FLAGS_weights);
  const std::string hf = absl::GetFlag(FLAGS_hf);
  if (weights.empty() && hf.empty()) {
    return Usage(inv, "import needs --weights=FILE.safetensors (or --hf=DIR)");
  }
  v1::ImportRequest first;
  first.set_session_id(config.session_id());
  if (config.has_architecture()) {
    *first.mutable_architecture() = config.architecture();
  } else {
    *first.mutable_model() = config.model();
  }
  *first.mutable_rules() = config.rules();
  *first.mutable_optimizer() = config.optimizer();
  first.set_seed(config.seed());
  if (absl::Status s = ModuleMapFromFlag(first.mutable_module_map()); !s.ok()) {
    return Usage(inv, std::string(s.message()));
  }
  // --hf: model.safetensors or the shards its index lists.
  auto s = weights.empty() ? inv.client->ImportHfWeights(std::move(first), hf)
                           : inv.client->ImportWeights(std::move(first), weights);
  if (!s.ok()) {
    if (s.status().code() == absl::StatusCode::kNotFound) {
      return Usage(inv, absl::StrCat(weights.empty() ? "--hf=" + hf : "--weights=" + weights, ": ",
                                     s.status().message()));
    }
    return Fail(inv, "import", s.status());
  }
  PrintSession(inv, *s);
  return kOk;
}

}  // namespace qtrain::cli
