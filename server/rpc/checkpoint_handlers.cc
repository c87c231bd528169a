// TrainerService's checkpoint RPCs: SaveCheckpoint (durable, in the data dir),
// DownloadCheckpoint (safetensors bytes in chunks) and UploadCheckpoint (chunks → an existing
// session, or a new one built from the checkpoint's configuration).
#include <chrono>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/trainer_service.h"
#include "server/store/checkpoint_io.h"
#include "server/store/session_checkpoint.h"

namespace qtrain::rpc {
namespace {

using engine::Session;
using engine::Trainer;

constexpr size_t kChunkBytes = 1 << 20;

// Streams one checkpoint's bytes, produced on the session's executor.
class DownloadStream final : public grpc::ServerWriteReactor<v1::CheckpointChunk> {
 public:
  DownloadStream(engine::SessionManager* sessions, Metrics* metrics, const std::string& id) {
    absl::StatusOr<std::shared_ptr<Session>> session = sessions->Get(id);
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
    chunk_.set_data(bytes_.substr(offset_, n));
    offset_ += n;
    if (n == 0) offset_ = 1;  // empty file: one empty chunk, then finish
    StartWrite(&chunk_);
  }

  std::string bytes_;
  size_t offset_ = 0;
  v1::CheckpointChunk chunk_;
};

// Collects chunks, then loads them into the named session (creating it when new).
class UploadStream final : public grpc::ServerReadReactor<v1::CheckpointChunk> {
 public:
  UploadStream(grpc::CallbackServerContext* ctx, engine::SessionManager* sessions,
               store::SessionStore* store, Metrics* metrics, ServiceLimits limits,
               v1::CheckpointInfo* response)
      : ctx_(ctx),
        sessions_(sessions),
        store_(store),
        metrics_(metrics),
        limits_(limits),
        response_(response) {
    // An empty lease of the server's budget, grown chunk by chunk.
    if (absl::StatusOr<engine::MemoryBudget::Lease> l =
            engine::MemoryBudget::Reserve(limits_.budget, 0, "a checkpoint upload");
        l.ok()) {
      lease_ = std::move(*l);
    }
    StartRead(&chunk_);
  }

  void OnReadDone(bool ok) override {
    if (ok) {
      if (id_.empty()) id_ = chunk_.session_id();
      if (bytes_.size() + chunk_.data().size() >
          static_cast<size_t>(limits_.max_checkpoint_bytes)) {
        Finish(ToGrpcStatus(absl::ResourceExhaustedError(absl::StrCat(
            "checkpoint upload exceeds max_checkpoint_bytes = ", limits_.max_checkpoint_bytes))));
        return;
      }
      // The bytes, and the tensors decoded from them, are held until the upload is done.
      if (absl::Status s = lease_.Grow(2 * static_cast<int64_t>(chunk_.data().size()),
                                       "a checkpoint upload (twice its bytes while decoding)");
          !s.ok()) {
        Finish(ToGrpcStatus(s));
        return;
      }
      bytes_ += chunk_.data();
      StartRead(&chunk_);
      return;
    }
    Load();
  }
  void OnDone() override { delete this; }

 private:
  void Load() {
    // A cancelled call also ends its reads: only a half-close means "the upload is complete".
    if (ctx_->IsCancelled()) {
      Finish(ToGrpcStatus(absl::CancelledError("upload cancelled: nothing was loaded")));
      return;
    }
    if (id_.empty()) {
      Finish(ToGrpcStatus(
          absl::InvalidArgumentError("the first CheckpointChunk must set session_id")));
      return;
    }
    absl::StatusOr<store::SafetensorsFile> decoded = store::DecodeCheckpoint(bytes_);
    if (!decoded.ok()) {
      Finish(ToGrpcStatus(decoded.status()));
      return;
    }
    auto file = std::make_shared<store::SafetensorsFile>(std::move(*decoded));
    absl::StatusOr<std::shared_ptr<Session>> session = sessions_->Get(id_);
    if (!session.ok()) {  // a new session from the checkpoint's own configuration
      absl::StatusOr<store::SessionConfig> config = store::ConfigFromCheckpoint(*file);
      if (!config.ok()) {
        Finish(ToGrpcStatus(config.status()));
        return;
      }
      session =
          sessions_->Create(id_, config->spec, config->rules, config->optimizer, config->seed);
      if (!session.ok()) {
        Finish(ToGrpcStatus(session.status()));
        return;
      }
      created_ = true;
    }
    const size_t size = bytes_.size();
    absl::Status s = (*session)->Submit([this, file, size](Trainer& t) {
      const auto start = std::chrono::steady_clock::now();
      absl::Status loaded = store::LoadCheckpoint(*file, t);
      // With a data dir the upload is durable before it is acknowledged (and a later restart
      // cannot bring back an older file of a higher step).
      if (loaded.ok() && store_ != nullptr) {
        absl::StatusOr<store::SavedCheckpoint> saved = store_->Save(id_, t);
        if (!saved.ok()) {
          loaded = absl::Status(saved.status().code(),
                                absl::StrCat("the checkpoint was loaded but could not be made "
                                             "durable: ",
                                             saved.status().message()));
        }
      }
      if (loaded.ok() && metrics_ != nullptr) {
        metrics_->RecordCheckpoint("upload", SecondsSince(start), static_cast<int64_t>(size));
        metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
      }
      if (loaded.ok()) {
        response_->set_session_id(id_);
        response_->set_step(t.step());
        response_->set_bytes(static_cast<int64_t>(size));
        response_->set_crc32(file->metadata[store::kChecksumKey]);
      } else if (created_) {
        (void)sessions_->Delete(id_);  // nothing half-made stays behind
      }
      Finish(ToGrpcStatus(loaded));
    });
    if (!s.ok()) Finish(ToGrpcStatus(s));
  }

  grpc::CallbackServerContext* ctx_;
  engine::SessionManager* sessions_;
  store::SessionStore* store_;  // may be null (no data dir)
  Metrics* metrics_;
  const ServiceLimits limits_;
  v1::CheckpointInfo* response_;
  v1::CheckpointChunk chunk_;
  std::string id_;
  std::string bytes_;
  engine::MemoryBudget::Lease lease_;  // for bytes_ and its decoded tensors
  bool created_ = false;
};

}  // namespace

grpc::ServerUnaryReactor* TrainerService::SaveCheckpoint(grpc::CallbackServerContext* ctx,
                                                         const v1::SaveCheckpointRequest* request,
                                                         v1::CheckpointInfo* response) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  if (store_ == nullptr) {
    reactor->Finish(ToGrpcStatus(absl::FailedPreconditionError(
        "this server runs without a data dir; use DownloadCheckpoint")));
    return reactor;
  }
  absl::StatusOr<std::shared_ptr<Session>> session = sessions_->Get(request->session_id());
  if (!session.ok()) {
    reactor->Finish(ToGrpcStatus(session.status()));
    return reactor;
  }
  const std::string id = request->session_id();
  absl::Status s = (*session)->Submit([this, reactor, response, id](Trainer& t) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<store::SavedCheckpoint> saved = store_->Save(id, t);
    if (saved.ok() && metrics_ != nullptr) {
      metrics_->RecordCheckpoint("save", SecondsSince(start), saved->bytes);
    }
    if (saved.ok()) {
      response->set_session_id(id);
      response->set_step(saved->step);
      response->set_bytes(saved->bytes);
      response->set_crc32(saved->crc32);
      response->set_path(saved->path);
    }
    reactor->Finish(ToGrpcStatus(saved.status()));
  });
  if (!s.ok()) reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerWriteReactor<v1::CheckpointChunk>* TrainerService::DownloadCheckpoint(
    grpc::CallbackServerContext*, const v1::DownloadCheckpointRequest* request) {
  return new DownloadStream(sessions_, metrics_, request->session_id());
}

grpc::ServerReadReactor<v1::CheckpointChunk>* TrainerService::UploadCheckpoint(
    grpc::CallbackServerContext* ctx, v1::CheckpointInfo* response) {
  return new UploadStream(ctx, sessions_, store_, metrics_, limits_, response);
}

}  // namespace qtrain::rpc
