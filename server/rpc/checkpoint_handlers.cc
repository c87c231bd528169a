// TrainerService's checkpoint RPCs: SaveCheckpoint (durable, in the data dir),
// DownloadCheckpoint (safetensors bytes in chunks) and UploadCheckpoint (chunks → an existing
// session, or a new one built from the checkpoint's configuration).
#include <algorithm>
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

// Streams one file's bytes (a checkpoint, an export), produced by the session operation that
// `produce` submits for the request (an error: the request is refused, nothing was submitted).
// Counts as a stream like Train's: refused while the server drains, and it holds one of its
// tenant's stream slots until it finishes. `metric`: the checkpoint kind its time and size are
// recorded as (null: not recorded).
template <typename Request>
class DownloadStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  using Producer =
      std::function<absl::Status(ops::SessionHandle&, const Request&, ops::Done<ops::FileResult>)>;
  DownloadStream(const CallGate& gate, ops::SessionOps* sessions, ServiceLimits limits,
                 const grpc::ByteBuffer* in, Metrics* metrics, const char* metric, Producer produce)
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
    absl::StatusOr<ops::SessionHandle> session = sessions->Bind(*id);
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
    absl::Status s =
        produce(*session, request, [this, metrics, metric](absl::StatusOr<ops::FileResult> r) {
          if (!r.ok()) {
            End(r.status());
            return;
          }
          if (metrics != nullptr && metric != nullptr) {
            metrics->RecordCheckpoint(metric, r->seconds, static_cast<int64_t>(r->bytes.size()));
          }
          bytes_ = std::move(r->bytes);
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
    auto file = std::make_shared<const store::SafetensorsFile>(std::move(*decoded));
    const int64_t size = static_cast<int64_t>(bytes_.size());
    const int64_t disk_limit = DiskLimit(gate_.tenants(), id_);
    const std::string crc32 =
        file->metadata.count(store::kChecksumKey) ? file->metadata.at(store::kChecksumKey) : "";
    // Answers the loaded step (the checkpoint's), once it is durable with a data dir.
    auto answer = [this, size, crc32](double seconds, int64_t step) -> absl::Status {
      if (target_.metrics != nullptr) target_.metrics->RecordCheckpoint("upload", seconds, size);
      v1::CheckpointInfo info;
      info.set_session_id(shown_id_);
      info.set_step(step);
      info.set_bytes(size);
      info.set_crc32(crc32);
      return SerializeWire(info, target_.response);
    };
    // Into a live session: on its executor, between its steps; a failed save gives it back its
    // state (SessionHandle::Load).
    if (absl::StatusOr<ops::SessionHandle> live = target_.sessions->Bind(id_); live.ok()) {
      absl::Status s =
          live->Load(file, size, disk_limit, [this, answer](absl::StatusOr<ops::LoadResult> r) {
            Done(r.ok() ? answer(r->seconds, r->step) : r.status());
          });
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
    const auto start = std::chrono::steady_clock::now();
    NewSessionQuota quota(gate_.tenants());
    ops::NewSession create;
    create.id = id_;
    create.model = config->spec;
    create.rules = config->rules;
    create.optimizer = config->optimizer;
    create.seed = config->seed;
    create.backend = config->backend;
    // A checkpoint of a data-parallel session (qtrain rebalance moving it) trains data-parallel
    // again on a server with a data-parallel configuration; one without takes it as one process.
    create.world_size = target_.sessions->data_parallel() ? std::max(config->world_size, 1) : 1;
    create.checkpoint = file;
    create.reserve = quota.AsReserve();
    create.disk_limit = disk_limit;
    absl::StatusOr<ops::SessionSummary> created = target_.sessions->Create(create);
    if (created.ok() && target_.metrics != nullptr) {
      target_.metrics->SetSessions(static_cast<int64_t>(target_.sessions->List().size()));
    }
    Done(created.ok() ? answer(SecondsSince(start), created->step) : created.status());
  }

  std::string id_;  // the engine's (Caller::Resolve)
};

}  // namespace

grpc::ServerUnaryReactor* TrainerService::SaveCheckpoint(Context* ctx, const Bytes* in,
                                                         Bytes* out) {
  using Call = UnaryCall<v1::SaveCheckpointRequest, v1::CheckpointInfo>;
  return Call::Start(Gate(ctx, "SaveCheckpoint"), in, out, [this](Call* call) {
    if (!sessions_->durable()) {
      call->Reply(absl::FailedPreconditionError(
          "this server runs without a data dir; use DownloadCheckpoint"));
      return;
    }
    absl::StatusOr<std::string> resolved = call->caller().Resolve(call->request().session_id());
    absl::StatusOr<ops::SessionHandle> session =
        resolved.ok() ? sessions_->Bind(*resolved)
                      : absl::StatusOr<ops::SessionHandle>(resolved.status());
    if (!session.ok()) {
      call->Reply(session.status());
      return;
    }
    absl::Status s = session->Save(
        DiskLimit(call->tenants(), *resolved), [this, call](absl::StatusOr<ops::SaveResult> r) {
          if (r.ok()) {
            if (metrics_ != nullptr) {
              metrics_->RecordCheckpoint("save", r->seconds, r->saved.bytes);
            }
            v1::CheckpointInfo* response = call->response();
            response->set_session_id(call->request().session_id());
            response->set_step(r->saved.step);
            response->set_bytes(r->saved.bytes);
            response->set_crc32(r->saved.crc32);
            response->set_path(ShownPath(call->caller(), sessions_->data_dir(), r->saved.path));
          }
          call->Reply(r.status());
        });
    if (!s.ok()) call->Reply(s);
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TrainerService::DownloadCheckpoint(Context* ctx,
                                                                               const Bytes* in) {
  return new DownloadStream<v1::DownloadCheckpointRequest>(
      Gate(ctx, "DownloadCheckpoint"), sessions_, limits_, in, metrics_, "download",
      [](ops::SessionHandle& h, const v1::DownloadCheckpointRequest&,
         ops::Done<ops::FileResult> done) { return h.EncodeCheckpoint(std::move(done)); });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TrainerService::ExportQuantized(Context* ctx,
                                                                            const Bytes* in) {
  return new DownloadStream<v1::ExportRequest>(
      Gate(ctx, "ExportQuantized"), sessions_, limits_, in, metrics_, nullptr,
      [](ops::SessionHandle& h, const v1::ExportRequest& request,
         ops::Done<ops::FileResult> done) -> absl::Status {
        ops::ExportFormat format = ops::ExportFormat::kCompressedTensors;
        if (request.format() == "onnx") {
          if (!request.module_map().empty()) {
            return absl::InvalidArgumentError(
                "module_map: the ONNX export names tensors by their qtrain paths; leave it empty");
          }
          format = ops::ExportFormat::kOnnx;
        } else if (request.format() != "compressed-tensors") {
          return absl::InvalidArgumentError(absl::StrCat(
              "format \"", request.format(), "\" is not one of: compressed-tensors, onnx"));
        }
        return h.Export(format, {request.module_map().begin(), request.module_map().end()},
                        request.session_id(), std::move(done));
      });
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::UploadCheckpoint(Context* ctx,
                                                                            Bytes* out) {
  return new UploadStream(Gate(ctx, "UploadCheckpoint"), ctx, limits_, &control_,
                          {sessions_, metrics_, out});
}

}  // namespace qtrain::rpc
