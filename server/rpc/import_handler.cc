// TrainerService::ImportWeights: a new session from a model spec and a standard safetensors file
// of float weights (store/import_weights.h), streamed in chunks like a checkpoint upload.
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/rpc/chunked_upload.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/trainer_service.h"
#include "server/store/import_weights.h"
#include "server/store/safetensors.h"

namespace qtrain::rpc {
namespace {

class ImportStream final : public ChunkedUpload<v1::ImportRequest> {
 public:
  ImportStream(CallGate gate, grpc::CallbackServerContext* ctx, ServiceLimits limits,
               engine::Worker* control, UploadTarget target)
      : ChunkedUpload(std::move(gate), ctx, limits, control, target, "weights import") {
    Begin();
  }

 private:
  // The first message carries the session's configuration; later ones only bytes.
  absl::Status OnMessage(const v1::ImportRequest& m, bool first) override {
    if (!first) {
      if (!m.session_id().empty() || m.has_model() || m.has_architecture() ||
          !m.module_map().empty() || m.has_rules() || m.has_optimizer() || m.seed() != 0) {
        return absl::InvalidArgumentError(
            "only the first ImportRequest may set session_id, model, architecture, rules, "
            "optimizer, seed or module_map");
      }
      return absl::OkStatus();
    }
    QTRAIN_ASSIGN_OR_RETURN(
        v1::ModelSpec model,
        RequestedModel(m.has_model(), m.model(), m.has_architecture(), m.architecture()));
    shown_id_ = m.session_id();
    config_ = m;
    config_.clear_data();
    config_.clear_architecture();
    *config_.mutable_model() = std::move(model);
    return absl::OkStatus();
  }

  void Load() override {
    if (!config_.has_model()) {
      Done(absl::InvalidArgumentError("the import carried no message"));
      return;
    }
    absl::StatusOr<std::string> id = gate_.caller().Resolve(shown_id_, /*creating=*/true);
    if (!id.ok()) {
      Done(id.status());
      return;
    }
    absl::StatusOr<store::SafetensorsFile> file = store::ParseSafetensors(bytes_);
    if (!file.ok()) {
      Done(absl::Status(
          file.status().code(),
          absl::StrCat("the weights are not a safetensors file: ", file.status().message())));
      return;
    }
    const std::map<std::string, std::string> module_map(config_.module_map().begin(),
                                                        config_.module_map().end());
    v1::Session session;
    NewSessionQuota quota(gate_.tenants());
    absl::StatusOr<std::shared_ptr<engine::Session>> created = target_.sessions->Create(
        *id, config_.model(), config_.rules(), config_.optimizer(), config_.seed(),
        [&](const std::string& new_id, engine::Trainer& t) -> absl::Status {
          QTRAIN_RETURN_IF_ERROR(quota.Reserve(new_id, t));
          QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus(
              "importing the weights", [&] { return store::ImportWeights(*file, module_map, t); }));
          // Durable before it is acknowledged, like every new session.
          if (target_.store != nullptr) {
            QTRAIN_RETURN_IF_ERROR(
                target_.store->Save(new_id, t, DiskLimit(gate_.tenants(), new_id)).status());
          }
          FillSession(gate_.caller().Show(new_id), t, &session);
          return absl::OkStatus();
        });
    if (created.ok() && target_.metrics != nullptr) {
      target_.metrics->SetSessions(static_cast<int64_t>(target_.sessions->List().size()));
    }
    if (created.ok()) {
      if (absl::Status s = SerializeWire(session, target_.response); !s.ok()) created = s;
    }
    Done(created.status());
  }

  v1::ImportRequest config_;  // the first message, without its bytes
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::ImportWeights(Context* ctx, Bytes* out) {
  return new ImportStream(Gate(ctx, "ImportWeights"), ctx, limits_, &control_,
                          {sessions_, store_, metrics_, out});
}

}  // namespace qtrain::rpc
