// TrainerService's checkpoint RPCs: SaveCheckpoint (durable, in the data dir),
// DownloadCheckpoint (safetensors bytes in chunks) and UploadCheckpoint (chunks → an existing
// session, or a new one built from the checkpoint's configuration).
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/trainer_service.h"
#include "server/rpc/unary_call.h"
#include "server/rpc/wire_message.h"
#include "server/store/checkpoint_io.h"
#include "server/store/session_checkpoint.h"

namespace qtrain::rpc {
namespace {

using engine::Session;
using engine::Trainer;

constexpr size_t kChunkBytes = 1 << 20;

// Streams one checkpoint's bytes, produced on the session's executor.
class DownloadStream final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  DownloadStream(const CallGate& gate, engine::SessionManager* sessions, Metrics* metrics,
                 const grpc::ByteBuffer* in) {
    if (!gate.admitted().ok()) {
      gate.Audit(gate.admitted());
      Finish(ToGrpcStatus(gate.admitted()));
      return;
    }
    v1::DownloadCheckpointRequest request;
    grpc::ByteBuffer bytes = *in;
    if (absl::Status parsed = ParseWire(bytes, &request, "the request"); !parsed.ok()) {
      Finish(ToGrpcStatus(parsed));
      return;
    }
    absl::StatusOr<std::string> id = gate.caller().Resolve(request.session_id());
    if (!id.ok()) {
      Finish(ToGrpcStatus(id.status()));
      return;
    }
    absl::StatusOr<std::shared_ptr<Session>> session = sessions->Get(*id);
    if (!session.ok()) {
      Finish(ToGrpcStatus(session.status()));
      return;
    }
    absl::Status s = (*session)->Submit([this, metrics](Trainer& t) {
      const auto start = std::chrono::steady_clock::now();
      bytes_ = store::EncodeCheckpoint(store::CheckpointFromTrainer(t));
      if (metrics != nullptr) {
        metrics->RecordCheckpoint("download", SecondsSince(start),
                                  static_cast<int64_t>(bytes_.size()));
      }
      WriteNext();  // the first write; later ones come from OnWriteDone
    });
    if (!s.ok()) Finish(ToGrpcStatus(s));
  }

  void OnWriteDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "the client stopped reading"));
      return;
    }
    WriteNext();
  }
  void OnDone() override { delete this; }

 private:
  // Only one write is ever in flight, so no lock is needed.
  void WriteNext() {
    if (offset_ >= bytes_.size() && offset_ > 0) {
      Finish(grpc::Status::OK);
      return;
    }
    const size_t n = std::min(kChunkBytes, bytes_.size() - offset_);
    v1::CheckpointChunk chunk;
    chunk.set_data(bytes_.substr(offset_, n));
    offset_ += n;
    if (n == 0) offset_ = 1;  // empty file: one empty chunk, then finish
    if (absl::Status s = SerializeWire(chunk, &out_); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    StartWrite(&out_);
  }

  std::string bytes_;
  size_t offset_ = 0;
  grpc::ByteBuffer out_;  // the chunk being written
};

// Collects chunks, then loads them into the named session (creating it when new).
class UploadStream final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  // `control` decodes the checkpoint and builds a new session off gRPC's threads.
  UploadStream(CallGate gate, grpc::CallbackServerContext* ctx, engine::SessionManager* sessions,
               store::SessionStore* store, Metrics* metrics, ServiceLimits limits,
               engine::Worker* control, grpc::ByteBuffer* response)
      : gate_(std::move(gate)),
        ctx_(ctx),
        control_(control),
        sessions_(sessions),
        store_(store),
        metrics_(metrics),
        limits_(limits),
        response_(response) {
    if (limits_.state != nullptr) ++limits_.state->streams;
    // An empty lease of the server's budget, grown chunk by chunk.
    if (absl::StatusOr<engine::MemoryBudget::Lease> l =
            engine::MemoryBudget::Reserve(limits_.budget, 0, "a checkpoint upload");
        l.ok()) {
      lease_ = std::move(*l);
    }
    if (!gate_.admitted().ok()) {
      Done(gate_.admitted());
      return;
    }
    StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    if (ok && limits_.state != nullptr && limits_.state->draining) {
      Done(DrainingError());  // nothing was loaded
      return;
    }
    if (ok) {
      if (absl::Status parsed =
              ParseWire(in_, &chunk_, absl::StrCat("upload message ", ++messages_));
          !parsed.ok()) {
        Done(parsed);  // nothing was loaded
        return;
      }
      if (shown_id_.empty()) shown_id_ = chunk_.session_id();
      if (bytes_.size() + chunk_.data().size() >
          static_cast<size_t>(limits_.max_checkpoint_bytes)) {
        Done(absl::ResourceExhaustedError(absl::StrCat(
            "checkpoint upload exceeds max_checkpoint_bytes = ", limits_.max_checkpoint_bytes)));
        return;
      }
      // The bytes, and the tensors decoded from them, are held until the upload is done.
      if (absl::Status s = lease_.Grow(2 * static_cast<int64_t>(chunk_.data().size()),
                                       "a checkpoint upload (twice its bytes while decoding)");
          !s.ok()) {
        Done(s);
        return;
      }
      bytes_ += chunk_.data();
      StartRead(&in_);
      return;
    }
    control_->Post([this] { Load(); });  // decoding and building are not for gRPC threads
  }
  void OnDone() override {
    if (limits_.state != nullptr) --limits_.state->streams;
    delete this;
  }

 private:
  // Finishes the call, first returning the upload's memory: the client may see the status
  // before gRPC calls OnDone.
  void Done(const absl::Status& status) {
    bytes_ = std::string();
    lease_.Release();
    gate_.set_session(shown_id_);
    gate_.Audit(status);
    Finish(ToGrpcStatus(status));
  }

  void Load() {
    // A cancelled call also ends its reads: only a half-close means "the upload is complete".
    if (ctx_->IsCancelled()) {
      Done(absl::CancelledError("upload cancelled: nothing was loaded"));
      return;
    }
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
    auto apply = [this, file, size](Trainer& t) -> absl::Status {
      const auto start = std::chrono::steady_clock::now();
      QTRAIN_RETURN_IF_ERROR(engine::OutOfMemoryAsStatus(
          "loading the uploaded checkpoint", [&] { return store::LoadCheckpoint(*file, t); }));
      if (store_ != nullptr) {
        absl::StatusOr<store::SavedCheckpoint> saved =
            store_->Save(id_, t, DiskLimit(gate_.tenants(), id_));
        if (!saved.ok()) {
          return absl::Status(saved.status().code(),
                              absl::StrCat("the checkpoint was loaded but could not be made "
                                           "durable: ",
                                           saved.status().message()));
        }
      }
      if (metrics_ != nullptr) {
        metrics_->RecordCheckpoint("upload", SecondsSince(start), static_cast<int64_t>(size));
      }
      v1::CheckpointInfo info;
      info.set_session_id(shown_id_);
      info.set_step(t.step());
      info.set_bytes(static_cast<int64_t>(size));
      info.set_crc32(file->metadata[store::kChecksumKey]);
      return SerializeWire(info, response_);
    };
    absl::StatusOr<std::shared_ptr<Session>> session = sessions_->Get(id_);
    if (session.ok()) {  // into a live session: on its executor, between its steps
      absl::Status s = (*session)->Submit([this, apply](Trainer& t) { Done(apply(t)); });
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
    session = sessions_->Create(id_, config->spec, config->rules, config->optimizer, config->seed,
                                [&](const std::string&, Trainer& t) -> absl::Status {
                                  QTRAIN_RETURN_IF_ERROR(CheckNewSession(gate_.tenants(), id_, t));
                                  return apply(t);
                                });
    if (session.ok() && metrics_ != nullptr) {
      metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
    }
    Done(session.status());
  }

  CallGate gate_;
  grpc::CallbackServerContext* ctx_;
  engine::Worker* control_;
  engine::SessionManager* sessions_;
  store::SessionStore* store_;  // may be null (no data dir)
  Metrics* metrics_;
  const ServiceLimits limits_;
  grpc::ByteBuffer* response_;  // gRPC's, valid until OnDone
  grpc::ByteBuffer in_;         // the message being read
  v1::CheckpointChunk chunk_;   // in_, parsed
  int64_t messages_ = 0;
  std::string shown_id_;  // as the client names it
  std::string id_;        // the engine's (Caller::Resolve)
  std::string bytes_;
  engine::MemoryBudget::Lease lease_;  // for bytes_ and its decoded tensors
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
        response->set_path(saved->path);
      }
      call->Reply(saved.status());
    });
    if (!s.ok()) call->Reply(s);
  });
}

grpc::ServerWriteReactor<grpc::ByteBuffer>* TrainerService::DownloadCheckpoint(Context* ctx,
                                                                               const Bytes* in) {
  return new DownloadStream(Gate(ctx, "DownloadCheckpoint"), sessions_, metrics_, in);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::UploadCheckpoint(Context* ctx,
                                                                            Bytes* out) {
  return new UploadStream(Gate(ctx, "UploadCheckpoint"), ctx, sessions_, store_, metrics_, limits_,
                          &control_, out);
}

}  // namespace qtrain::rpc
