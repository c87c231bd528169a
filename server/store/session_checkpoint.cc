#include "server/store/session_checkpoint.h"

#include <google/protobuf/util/json_util.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend/backend_registry.h"
#include "kernels/status_macros.h"

namespace qtrain::store {
namespace {

template <typename Message>
std::string ToJson(const Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, options);
  return out;
}

template <typename Message>
absl::Status FromJson(const SafetensorsFile& file, const char* key, Message* out) {
  auto it = file.metadata.find(key);
  if (it == file.metadata.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint metadata has no \"", key, "\" (not a qtrain checkpoint?)"));
  }
  auto status = google::protobuf::util::JsonStringToMessage(it->second, out);
  if (!status.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint metadata \"", key, "\" does not parse: ", status.ToString()));
  }
  return absl::OkStatus();
}

absl::StatusOr<int64_t> IntMetadata(const SafetensorsFile& file, const char* key) {
  auto it = file.metadata.find(key);
  if (it == file.metadata.end()) {
    return int64_t{0};
  }
  int64_t v = 0;
  if (!absl::SimpleAtoi(it->second, &v) || v < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint metadata \"", key, "\" = \"", it->second, "\" is not a count"));
  }
  return v;
}

}  // namespace

absl::StatusOr<SafetensorsFile> CheckpointFromTrainer(engine::Trainer& trainer) {
  SafetensorsFile file;
  QTRAIN_ASSIGN_OR_RETURN(file.tensors, trainer.ExportState());
  file.metadata[kFormatKey] = kFormat;
  file.metadata["model_spec"] = ToJson(trainer.model().spec());
  file.metadata["rules"] =
      trainer.model().rules() ? ToJson(trainer.model().rules()->source()) : std::string("{}");
  file.metadata["optimizer"] = ToJson(trainer.optimizer_config());
  file.metadata["step"] = absl::StrCat(trainer.step());
  file.metadata["seed"] = absl::StrCat(trainer.seed());
  file.metadata["backend"] = trainer.backend_name();
  if (const engine::StepGroup* g = trainer.step_group(); g != nullptr && g->world_size() > 1) {
    file.metadata["data_parallel_world_size"] = absl::StrCat(g->world_size());
  }
  return file;
}

absl::StatusOr<SessionConfig> ConfigFromCheckpoint(const SafetensorsFile& file) {
  SessionConfig c;
  QTRAIN_RETURN_IF_ERROR(FromJson(file, "model_spec", &c.spec));
  QTRAIN_RETURN_IF_ERROR(FromJson(file, "rules", &c.rules));
  QTRAIN_RETURN_IF_ERROR(FromJson(file, "optimizer", &c.optimizer));
  QTRAIN_ASSIGN_OR_RETURN(c.step, IntMetadata(file, "step"));
  QTRAIN_ASSIGN_OR_RETURN(int64_t seed, IntMetadata(file, "seed"));
  c.seed = static_cast<uint64_t>(seed);
  if (file.metadata.count("data_parallel_world_size") != 0) {
    QTRAIN_ASSIGN_OR_RETURN(int64_t world, IntMetadata(file, "data_parallel_world_size"));
    if (world < 1 || world > 64) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint metadata \"data_parallel_world_size\" = ", world, " is not in [1, 64]"));
    }
    c.world_size = static_cast<int>(world);
  }
  if (auto it = file.metadata.find("backend"); it != file.metadata.end()) {
    if (!IsBackend(it->second)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "checkpoint metadata \"backend\" = \"", it->second, "\" is not one of ", BackendNames()));
    }
    c.backend = it->second;
  }
  return c;
}

absl::Status LoadCheckpoint(const SafetensorsFile& file, engine::Trainer& trainer) {
  QTRAIN_ASSIGN_OR_RETURN(int64_t step, IntMetadata(file, "step"));
  return trainer.ImportState(file.tensors, step);
}

}  // namespace qtrain::store
