// TrainerService::ImportWeights: a new session from a model spec and a standard safetensors file
// of float weights (store/import_weights.h), streamed in chunks like a checkpoint upload.
#include <map>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/rpc/chunked_upload.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/trainer_service.h"
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
    NewSessionQuota quota(gate_.tenants());
    ops::NewSession create;
    create.id = *id;
    create.model = config_.model();
    create.rules = config_.rules();
    create.optimizer = config_.optimizer();
    create.seed = config_.seed();
    create.weights = std::make_shared<const store::SafetensorsFile>(*std::move(file));
    create.module_map = {config_.module_map().begin(), config_.module_map().end()};
    create.reserve = quota.AsReserve();
    create.disk_limit = DiskLimit(gate_.tenants(), *id);
    absl::StatusOr<ops::SessionSummary> created = target_.sessions->Create(create);
    absl::Status s = created.status();
    if (created.ok()) {
      if (target_.metrics != nullptr) {
        target_.metrics->SetSessions(static_cast<int64_t>(target_.sessions->List().size()));
      }
      v1::Session session;
      FillSession(gate_.caller().Show(created->id), *created, &session);
      s = SerializeWire(session, target_.response);
    }
    Done(s);
  }

  v1::ImportRequest config_;  // the first message, without its bytes
};

}  // namespace

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::ImportWeights(Context* ctx, Bytes* out) {
  return new ImportStream(Gate(ctx, "ImportWeights"), ctx, limits_, &control_,
                          {sessions_, metrics_, out});
}

}  // namespace qtrain::rpc
