#include "client/cli/cli.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/flags.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {

int ExitCodeFor(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kOk:
      return kOk;
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kDeadlineExceeded:
      return kUnavailable;
    case absl::StatusCode::kNotFound:
      return kNotFound;
    case absl::StatusCode::kAlreadyExists:
      return kAlreadyExists;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return kRejected;
    case absl::StatusCode::kResourceExhausted:
      return kResourceExhausted;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kDenied;
    default:
      return kServerError;
  }
}

namespace {

int Report(const Invocation& inv, const std::string& code, const std::string& message,
           int exit_code, const nlohmann::json& partial = nlohmann::json::object()) {
  if (inv.json) {
    nlohmann::json j = partial;
    j["error"] = {{"code", code}, {"message", message}, {"exit", exit_code}};
    std::printf("%s\n", j.dump().c_str());
  }
  std::fprintf(stderr, "qtrain: %s: %s\n", code.c_str(), message.c_str());
  return exit_code;
}

}  // namespace

int Fail(const Invocation& inv, const std::string& what, const absl::Status& status) {
  return Fail(inv, what, status, nlohmann::json::object());
}

int Fail(const Invocation& inv, const std::string& what, const absl::Status& status,
         const nlohmann::json& partial) {
  std::string message = absl::StrCat(what, ": ", status.message());
  if (status.code() == absl::StatusCode::kUnavailable ||
      status.code() == absl::StatusCode::kDeadlineExceeded) {
    absl::StrAppend(&message, " (is qtrain-server running at ", absl::GetFlag(FLAGS_server),
                    "? set --server or $QTRAIN_SERVER)");
  }
  return Report(inv, absl::StatusCodeToString(status.code()), message, ExitCodeFor(status),
                partial);
}

int Usage(const Invocation& inv, const std::string& message) {
  return Report(inv, "USAGE",
                absl::StrCat(message, " (see `qtrain help",
                             inv.command.empty() ? "" : absl::StrCat(" ", inv.command), "`)"),
                kUsage);
}

namespace {

// Adds "values" (numbers) beside the base64 "data" of every qtrain.v1.Tensor in `j`, so that
// scripts read scales and outputs without decoding bytes.
void AddTensorValues(nlohmann::ordered_json& j) {
  if (j.is_array()) {
    for (auto& e : j) AddTensorValues(e);
    return;
  }
  if (!j.is_object()) return;
  for (auto& [key, value] : j.items()) AddTensorValues(value);
  if (!j.contains("dtype") || !j.contains("data") || !j["data"].is_string()) return;
  std::string bytes;
  if (!absl::Base64Unescape(j["data"].get<std::string>(), &bytes)) return;
  const std::string dtype = j["dtype"].is_string() ? j["dtype"].get<std::string>() : "";
  nlohmann::ordered_json values = nlohmann::ordered_json::array();
  auto read = [&](auto zero) {
    using T = decltype(zero);
    for (size_t i = 0; i + sizeof(T) <= bytes.size(); i += sizeof(T)) {
      T v;
      std::memcpy(&v, bytes.data() + i, sizeof(T));  // little-endian, as x86-64
      values.push_back(v);
    }
  };
  if (dtype == "F32") {
    read(float{});
  } else if (dtype == "I32") {
    read(int32_t{});
  } else if (dtype == "I16") {
    read(int16_t{});
  } else if (dtype == "I8") {
    read(int8_t{});
  } else if (dtype == "U8") {
    read(uint8_t{});
  } else {
    return;
  }
  j["values"] = std::move(values);
}

}  // namespace

void PrintJson(const google::protobuf::Message& message) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = true;  // step 0 and accuracy 0 are answers too
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(out, nullptr, false);
  if (!j.is_discarded()) {
    AddTensorValues(j);
    out = j.dump();
  }
  std::printf("%s\n", out.c_str());
}

absl::Status LoadJsonMessage(const std::string& flag, const std::string& text_or_path,
                             google::protobuf::Message* out) {
  std::string text = text_or_path, where = "inline JSON";
  if (text.find('{') == std::string::npos) {
    auto file = client::ReadMaybeGzip(text_or_path);
    if (!file.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": ", file.status().message()));
    }
    text = *file;
    where = text_or_path;
  }
  auto s = google::protobuf::util::JsonStringToMessage(text, out);
  if (!s.ok()) {
    // protobuf's messages may start with ": " themselves.
    const std::string message = s.message().as_string();
    absl::string_view why = message;
    absl::ConsumePrefix(&why, ": ");
    return absl::InvalidArgumentError(
        absl::StrCat("--", flag, ": ", where, " is not a valid ", out->GetTypeName(), ": ", why));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> InputShapeFromFlag() {
  const std::string shape = absl::GetFlag(FLAGS_input_shape);
  std::vector<int64_t> out;
  if (shape.empty()) return out;
  for (absl::string_view d : absl::StrSplit(shape, ',')) {
    int64_t v = 0;
    if (!absl::SimpleAtoi(d, &v) || v < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("--input_shape=", shape, ": \"", d, "\" is not a positive integer"));
    }
    out.push_back(v);
  }
  return out;
}

const char* const kArchOptionFlags[8] = {"num_classes", "width_mult", "image_size", "patch_size",
                                         "num_layers",  "num_heads",  "hidden_dim", "mlp_dim"};

absl::StatusOr<std::map<std::string, double>> ArchOptionsFromFlags(const Invocation& inv) {
  const std::string flag = absl::GetFlag(FLAGS_arch_options);
  std::map<std::string, double> out;
  const std::map<std::string, double> named = {
      {"num_classes", static_cast<double>(absl::GetFlag(FLAGS_num_classes))},
      {"width_mult", absl::GetFlag(FLAGS_width_mult)},
      {"image_size", static_cast<double>(absl::GetFlag(FLAGS_image_size))},
      {"patch_size", static_cast<double>(absl::GetFlag(FLAGS_patch_size))},
      {"num_layers", static_cast<double>(absl::GetFlag(FLAGS_num_layers))},
      {"num_heads", static_cast<double>(absl::GetFlag(FLAGS_num_heads))},
      {"hidden_dim", static_cast<double>(absl::GetFlag(FLAGS_hidden_dim))},
      {"mlp_dim", static_cast<double>(absl::GetFlag(FLAGS_mlp_dim))}};
  for (const auto& [name, value] : named) {
    if (Given(inv, name)) out[name] = value;
  }
  if (flag.empty()) return out;
  for (absl::string_view item : absl::StrSplit(flag, ',')) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(item, '=');
    double v = 0;
    if (kv.first.empty() || !absl::SimpleAtod(kv.second, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--arch_options=", flag, ": \"", item, "\" is not name=number"));
    }
    if (!out.emplace(std::string(kv.first), v).second) {
      return absl::InvalidArgumentError(absl::StrCat("--arch_options=", flag, ": ", kv.first,
                                                     " is given twice (or also as --", kv.first,
                                                     ")"));
    }
  }
  return out;
}

namespace {
bool labels_are_inputs = false;
std::optional<int32_t> session_pad_id;
}  // namespace

void SetLabelsAreInputs(bool v) { labels_are_inputs = v; }
bool LabelsAreInputs() { return labels_are_inputs; }
void SetSessionPadId(std::optional<int32_t> pad_id) { session_pad_id = pad_id; }

absl::StatusOr<client::Dataset> LoadDataFromFlags(const std::string& path,
                                                  const std::string& split) {
  client::DataOptions o;
  o.path = path.empty() ? absl::GetFlag(FLAGS_data) : path;
  o.format = absl::GetFlag(FLAGS_format);
  o.split = split.empty() ? absl::GetFlag(FLAGS_split) : split;
  o.labels_path = absl::GetFlag(FLAGS_labels);
  o.label_column = absl::GetFlag(FLAGS_label_column);
  o.targets = absl::GetFlag(FLAGS_targets);
  o.input_scale = absl::GetFlag(FLAGS_input_scale);
  o.seq_len = absl::GetFlag(FLAGS_seq_len);
  o.tokenizer = absl::GetFlag(FLAGS_tokenizer);
  o.token_dtype = absl::GetFlag(FLAGS_token_dtype);
  o.labels_are_inputs = LabelsAreInputs();
  o.sequences = absl::GetFlag(FLAGS_sequences);
  o.pad_id = session_pad_id;
  o.limit = absl::GetFlag(FLAGS_limit);
  auto shape = InputShapeFromFlag();
  if (!shape.ok()) return shape.status();
  o.input_shape = *shape;
  return client::LoadDataset(o);
}

namespace {

// "" when `dir` is an existing directory this process may create files in.
std::string WritableDir(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return std::strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "not a directory";
  if (::access(dir.c_str(), W_OK | X_OK) != 0) return std::strerror(errno);
  return "";
}

std::string Parent(const std::string& path) {
  std::string p = path;
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  const size_t slash = p.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : p.substr(0, slash);
}

}  // namespace

std::string CheckOutputDir(const std::string& flag, const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    const std::string why = WritableDir(dir);
    return why.empty() ? "" : absl::StrCat("--", flag, "=", dir, ": ", why);
  }
  const std::string parent = Parent(dir);
  const std::string why = WritableDir(parent);
  if (why.empty()) return "";
  return absl::StrCat("--", flag, "=", dir, ": cannot create it in ", parent, ": ", why,
                      " (only the last directory is created)");
}

std::string CheckOutputFile(const std::string& flag, const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::StrCat("--", flag, "=", path, ": is a directory");
    if (::access(path.c_str(), W_OK) != 0) {
      return absl::StrCat("--", flag, "=", path, ": ", std::strerror(errno));
    }
  }
  const std::string parent = Parent(path);
  const std::string why = WritableDir(parent);
  if (why.empty()) return "";
  return absl::StrCat("--", flag, "=", path, ": cannot write in ", parent, ": ", why);
}

bool Given(const Invocation& inv, const std::string& flag) {
  return std::find(inv.flags.begin(), inv.flags.end(), flag) != inv.flags.end();
}

std::string Arg(const Invocation& inv, size_t i) {
  return i < inv.args.size() ? inv.args[i] : std::string();
}

}  // namespace qtrain::cli
