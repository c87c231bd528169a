// TrainerService's checkpoint RPCs: SaveCheckpoint (durable, in the data dir),
// DownloadCheckpoint (safetensors bytes in chunks) and UploadCheckpoint (chunks → an existing
// session, or a new one built from the checkpoint's configuration).
#include <chrono>
#include <map>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"
#include "server/engine/session_id.h"
#include "server/rpc/chunked_upload.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/trainer_service.h"
#include "server/rpc/unary_call.h"
#include "server/rpc/wire_message.h"
#include "server/store/checkpoint_io.h"
#include "server/store/export_onnx.h"
#include "server/store/export_quantized.h"
#include "server/store/session_checkpoint.h"

namespace qtrain::rpc {
namespace {

using engine::Session;
using engine::Trainer;

constexpr size_t kChunkBytes = 1 << 20;

// Where a saved checkpoint lies, as its caller may know it: relative to the tenant's directory
// for a tenant's caller ("run1.safetensors"), relative to the data dir for admins and servers
// without authentication ("tenants/team-a/run1.safetensors"). The server's own layout above the
// data dir stays private.
std::string ShownPath(const Caller& caller, const std::string& root, const std::string& path) {
  std::string relative = path.rfind(root + "/", 0) == 0 ? path.substr(root.size() + 1) : path;
  const std::optional<Identity> who = caller.identity();
  if (who && who->role != Role::kAdmin) relative = relative.substr(relative.rfind('/') + 1);
  return relative;
}

// Streams one file's bytes (a checkpoint, an export), produced on the session's executor by
// `produce` from the request. Counts as a stream like Train's: refused while the server drains,
// and it holds one of its tenant's stream slots until it finishes.
template <typename Request>
class DownloadStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  using Producer = std::function<absl::StatusOr<std::string>(const Request&, Trainer&)>;
  DownloadStream(const CallGate& gate, engine::SessionManager* sessions, ServiceLimits limits,
                 const grpc::ByteBuffer* in, Producer produce)
      : limits_(limits), tenants_(gate.tenants()) {
    if (limits_.state != nullptr) ++limits_.state->streams;
    if (!gate.admitted().ok()) {
      gate.Audit(gate.admitted());
      End(gate.admitted());
      return;
    }
    if (limits_.state != nullptr && limits_.state->draining) {
      End(DrainingError());
      return;
    }
    Request request;
    grpc::ByteBuffer bytes = *in;
    if (absl::Status parsed = ParseWire(bytes, &request, "the request"); !parsed.ok()) {
      End(parsed);
      return;
    }
    absl::StatusOr<std::string> id = gate.caller().Resolve(request.session_id());
    if (!id.ok()) {
      End(id.status());
      return;
    }
    absl::StatusOr<std::shared_ptr<Session>> session = sessions->Get(*id);
    if (!session.ok()) {
      End(session.status());
      return;
    }
    const std::string tenant(engine::TenantOf(*id));
    if (tenants_ != nullptr && !tenant.empty()) {
      if (absl::Status slot = tenants_->AcquireStream(tenant); !slot.ok()) {
        End(slot);
        return;
      }
      slot_tenant_ = tenant;
    }
    absl::Status s = (*session)->Submit([this, request, produce = std::move(produce)](Trainer& t) {
      absl::StatusOr<std::string> bytes = produce(request, t);
      if (!bytes.ok()) {
        End(bytes.status());
        return;
      }
      bytes_ = *std::move(bytes);
      WriteNext();  // the first write; later ones come from OnWriteDone
    });
    if (!s.ok()) End(s);
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      End(absl::CancelledError("the client stopped reading"));
      return;
    }
    WriteNext();
  }
  void OnDone() override {
    if (limits_.state != nullptr) --limits_.state->streams;
    delete this;
  }

 private:
  // Finishes the call. The tenant's stream slot goes back first: the client may open its next
  // stream as soon as it sees the status, before gRPC calls OnDone. Called once.
  void End(const absl::Status& status) {
    if (slot_tenant_) tenants_->ReleaseStream(*slot_tenant_);
    slot_tenant_.reset();
    Finish(ToGrpcStatus(status));
  }

  // Only one write is ever in flight, so no lock is needed.
  void WriteNext() {
    if (offset_ >= bytes_.size() && offset_ > 0) {
      End(absl::OkStatus());
      return;
    }
    const size_t n = std::min(kChunkBytes, bytes_.size() - offset_);
    v1::CheckpointChunk chunk;
    chunk.set_data(bytes_.substr(offset_, n));
    offset_ += n;
    if (n == 0) offset_ = 1;  // empty file: one empty chunk, then finish
    if (absl::Status s = SerializeWire(chunk, &out_); !s.ok()) {
      End(s);
      return;
    }
    StartWrite(&out_);
  }

  ServiceLimits limits_;
  TenantQuotas* tenants_;                   // may be null: no quotas
  std::optional<std::string> slot_tenant_;  // the tenant whose stream slot this call holds
  std::string bytes_;
  size_t offset_ = 0;
  grpc::ByteBuffer out_;  // the chunk being written
};

// Collects chunks, then loads them into the named session (creating it when new).
class UploadStream final : public ChunkedUpload<v1::CheckpointChunk> {
 public:
  UploadStream(CallGate gate, grpc::CallbackServerContext* ctx, ServiceLimits limits,
               engine::Worker* control, UploadTarget target)
      : ChunkedUpload(std::move(gate), ctx, limits, control, target, "checkpoint upload") {
    Begin();
  }

 private:
  absl::Status OnMessage(const v1::CheckpointChunk& chunk, bool first) override {
    if (first) {
      shown_id_ = chunk.session_id();
    } else if (!chunk.session_id().empty() && chunk.session_id() != shown_id_) {
      return absl::InvalidArgumentError(
          "only the first CheckpointChunk names the session (a later one names another)");
    }
    return absl::OkStatus();
  }

  void Load() override {
    if (shown_id_.empty()) {
      Done(absl::InvalidArgumentError("the first CheckpointChunk must set session_id"));
      return;
    }
    absl::StatusOr<std::string> id = gate_.caller().Resolve(shown_id_);
    if (!id.ok()) {
      Done(id.status());
      return;
    }
    id_ = *std::move(id);
    absl::StatusOr<store::SafetensorsFile> decoded = store::DecodeCheckpoint(bytes_);
    if (!decoded.ok()) {
      Done(decoded.status());
      return;
    }
    auto file = std::make_shared<store::SafetensorsFile>(std::move(*decoded));
    const size_t size = bytes_.size();
    // Loads the checkpoint into `t` and, with a data dir, makes it durable before it is
    // acknowledged (and so a later restart cannot bring back an older file of a higher step).
    // A live session whose new state cannot be made durable gets its old state back: a refused
    // upload changes nothing, neither the session nor its file.
    auto apply = [this, file, size](Trainer& t, bool live) -> absl::Status {
      const auto start = std::chrono::steady_clock::now();
      std::map<std::string, Tensor> before;
      const int64_t before_step = t.step();
      engine::MemoryBudget::Lease kept;  // the copy is about as large as the checkpoint
      if (live && target_.store != nullptr) {
        QTRAIN_ASSIGN_OR_RETURN(
            kept, engine::MemoryBudget::Reserve(limits_.budget, static_cast<int64_t>(size),
                                                "keeping the session's state during the upload"));
        QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus("keeping the session's state", [&] {
          before = t.ExportState();
          return absl::OkStatus();
        }));
      }
      QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus(
          "loading the uploaded checkpoint", [&] { return store::LoadCheckpoint(*file, t); }));
      if (target_.store != nullptr) {
        absl::StatusOr<store::SavedCheckpoint> saved =
            target_.store->Save(id_, t, DiskLimit(gate_.tenants(), id_));
        if (!saved.ok()) {
          absl::Status restored = live ? t.ImportState(before, before_step) : absl::OkStatus();
          return absl::Status(
              saved.status().code(),
              absl::StrCat("the checkpoint could not be made durable, so it was not loaded: ",
                           saved.status().message(),
                           restored.ok() ? ""
                                         : absl::StrCat(" (and restoring the session's state "
                                                        "failed: ",
                                                        restored.message(), ")")));
        }
      }
      if (target_.metrics != nullptr) {
        target_.metrics->RecordCheckpoint("upload", SecondsSince(start),
                                          static_cast<int64_t>(size));
      }
      v1::CheckpointInfo info;
      info.set_session_id(shown_id_);
      info.set_step(t.step());
      info.set_bytes(static_cast<int64_t>(size));
      info.set_crc32(file->metadata[store::kChecksumKey]);
      return SerializeWire(info, target_.response);
    };
    absl::StatusOr<std::shared_ptr<Session>> session = target_.sessions->Get(id_);
    if (session.ok()) {  // into a live session: on its executor, between its steps
      absl::Status s = (*session)->Submit([this, apply](Trainer& t) { Done(apply(t, true)); });
      if (!s.ok()) Done(s);
      return;
    }
    // A new session from the checkpoint's own configuration, loaded (and saved) before it is
    // registered: a failure leaves nothing behind.
    absl::StatusOr<store::SessionConfig> config = store::ConfigFromCheckpoint(*file);
    if (!config.ok()) {
      Done(config.status());
      return;
    }
    NewSessionQuota quota(gate_.tenants());
    session = target_.sessions->Create(
        id_, config->spec, config->rules, config->optimizer, config->seed,
        [&](const std::string&, Trainer& t) -> absl::Status {
          QTRAIN_RETURN_IF_ERROR(quota.Reserve(id_, t));
          QTRAIN_RETURN_IF_ERROR(JoinGroup(config->world_size, t));
          return apply(t, false);
        },
        config->backend);
    if (session.ok() && target_.metrics != nullptr) {
      target_.metrics->SetSessions(static_cast<int64_t>(target_.sessions->List().size()));
    }
    Done(session.status());
  }

  // A checkpoint of a data-parallel session (qtrain rebalance moving it) trains data-parallel
  // again on a server with a data-parallel configuration (InvalidArgument naming the world size
  // when it has too few peers); a server without one takes it as one process.
  absl::Status JoinGroup(int world_size, Trainer& t) {
    if (world_size <= 1 || target_.groups == nullptr || !*target_.groups) return absl::OkStatus();
    QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<engine::StepGroup> group,
                            (*target_.groups)(id_, world_size));
    t.set_step_group(std::move(group));
    return absl::OkStatus();
  }

  std::string id_;  // the engine's (Caller::Resolve)
};

}  // namespace

grpc::ServerUnaryReactor* TrainerService::SaveCheckpoint(Context* ctx, const Bytes* in,
                                                         Bytes* out) {
  using Call = UnaryCall<v1::SaveCheckpointRequest, v1::CheckpointInfo>;
  return Call::Start(Gate(ctx, "SaveCheckpoint"), in, out, [this](Call* call) {
    if (store_ == nullptr) {
      call->Reply(absl::FailedPreconditionError(
          "this server runs without a data dir; use DownloadCheckpoint"));
      return;
    }
    absl::StatusOr<std::string> resolved = call->caller().Resolve(call->request().session_id());
    if (!resolved.ok()) {
      call->Reply(resolved.status());
      return;
    }
    const std::string id = *resolved;
    absl::StatusOr<std::shared_ptr<Session>> session = sessions_->Get(id);
    if (!session.ok()) {
      call->Reply(session.status());
      return;
    }
    absl::Status s = (*session)->Submit([this, call, id](Trainer& t) {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<store::SavedCheckpoint> saved =
          store_->Save(id, t, DiskLimit(call->tenants(), id));
      if (saved.ok() && metrics_ != nullptr) {
        metrics_->RecordCheckpoint("save", SecondsSince(start), saved->bytes);
      }
      if (saved.ok()) {
        v1::CheckpointInfo* response = call->response();
        response->set_session_id(call->request().session_id());
        response->set_step(saved->step);
        response->set_bytes(saved->bytes);
        response->set_crc32(saved->crc32);
        response->set_path(ShownPath(call->caller(), store_->root(), saved->path));
      }
      call->Reply(saved.status());
    });
    if (!s.ok()) call->Reply(s);
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TrainerService::DownloadCheckpoint(Context* ctx,
                                                                               const Bytes* in) {
  Metrics* metrics = metrics_;
  return new DownloadStream<v1::DownloadCheckpointRequest>(
      Gate(ctx, "DownloadCheckpoint"), sessions_, limits_, in,
      [metrics](const v1::DownloadCheckpointRequest&, Trainer& t) -> absl::StatusOr<std::string> {
        const auto start = std::chrono::steady_clock::now();
        std::string bytes = store::EncodeCheckpoint(store::CheckpointFromTrainer(t));
        if (metrics != nullptr) {
          metrics->RecordCheckpoint("download", SecondsSince(start),
                                    static_cast<int64_t>(bytes.size()));
        }
        return bytes;
      });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TrainerService::ExportQuantized(Context* ctx,
                                                                            const Bytes* in) {
  return new DownloadStream<v1::ExportRequest>(
      Gate(ctx, "ExportQuantized"), sessions_, limits_, in,
      [](const v1::ExportRequest& request, Trainer& t) -> absl::StatusOr<std::string> {
        if (request.format() == "onnx") {
          if (!request.module_map().empty()) {
            return absl::InvalidArgumentError(
                "module_map: the ONNX export names tensors by their qtrain paths; leave it empty");
          }
          return store::ExportOnnx(t, request.session_id());
        }
        if (request.format() != "compressed-tensors") {
          return absl::InvalidArgumentError(absl::StrCat(
              "format \"", request.format(), "\" is not one of: compressed-tensors, onnx"));
        }
        const std::map<std::string, std::string> module_map(request.module_map().begin(),
                                                            request.module_map().end());
        QTRAIN_ASSIGN_OR_RETURN(store::SafetensorsFile file,
                                store::ExportCompressedTensors(t, module_map));
        return store::SerializeSafetensors(file);
      });
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::UploadCheckpoint(Context* ctx,
                                                                            Bytes* out) {
  return new UploadStream(Gate(ctx, "UploadCheckpoint"), ctx, limits_, &control_,
                          {sessions_, store_, metrics_, out, &groups_});
}

}  // namespace qtrain::rpc
