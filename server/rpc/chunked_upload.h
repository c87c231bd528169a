// ChunkedUpload: the reactor shape of a client-streaming upload of file bytes (UploadCheckpoint,
// ImportWeights). It reads chunks on gRPC threads, enforces max_checkpoint_bytes and reserves
// twice the bytes from the memory budget as they arrive (the bytes and what is decoded from
// them), refuses new uploads while the server drains, and on the client's half-close hands
// Load() to the control worker: decoding and building sessions are not for gRPC threads.
// Subclasses read each parsed message in OnMessage and answer through Done exactly once.
#pragma once

#include <string>
#include <utility>

#include <grpcpp/support/server_callback.h>

#include "absl/strings/str_cat.h"
#include "server/engine/memory_budget.h"
#include "server/engine/worker.h"
#include "server/ops/session_ops.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_access.h"
#include "server/rpc/stream_reactors.h"
#include "server/rpc/wire_message.h"

namespace qtrain::rpc {

// What an upload works with; all borrowed from the service.
struct UploadTarget {
  ops::SessionOps* sessions;
  Metrics* metrics;            // may be null
  grpc::ByteBuffer* response;  // gRPC's, valid until OnDone
};

template <typename Message>
class ChunkedUpload : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  // The subclass's constructor ends with Begin(), which starts the reads.
  ChunkedUpload(CallGate gate, grpc::CallbackServerContext* ctx, ServiceLimits limits,
                engine::Worker* control, UploadTarget target, const char* what)
      : gate_(std::move(gate)),
        ctx_(ctx),
        limits_(limits),
        target_(target),
        control_(control),
        what_(what) {}

  void OnReadDone(bool ok) override {
    if (ok && limits_.state != nullptr && limits_.state->draining) {
      Done(DrainingError());  // nothing was loaded
      return;
    }
    if (!ok) {
      control_->Post([this] {
        // A cancelled call also ends its reads: only a half-close means "the upload is
        // complete".
        if (ctx_->IsCancelled()) {
          Done(absl::CancelledError(absl::StrCat(what_, " cancelled: nothing was loaded")));
        } else {
          Load();
        }
      });
      return;
    }
    if (absl::Status still = gate_.StillAdmitted(); !still.ok()) {
      Done(still);  // a revoked token ends the upload; nothing was loaded
      return;
    }
    if (absl::Status parsed =
            ParseWire(in_, &message_, absl::StrCat(what_, " message ", ++messages_));
        !parsed.ok()) {
      Done(parsed);
      return;
    }
    if (absl::Status s = OnMessage(message_, messages_ == 1); !s.ok()) {
      Done(s);
      return;
    }
    const std::string& data = message_.data();
    if (bytes_.size() + data.size() > static_cast<size_t>(limits_.max_checkpoint_bytes)) {
      Done(absl::ResourceExhaustedError(
          absl::StrCat(what_, " exceeds max_checkpoint_bytes = ", limits_.max_checkpoint_bytes)));
      return;
    }
    // The bytes, and the tensors decoded from them, are held until the upload is done.
    if (absl::Status s = lease_.Grow(2 * static_cast<int64_t>(data.size()),
                                     absl::StrCat(what_, " (twice its bytes while decoding)"));
        !s.ok()) {
      Done(s);
      return;
    }
    bytes_ += data;
    StartRead(&in_);
  }

  void OnDone() override {
    if (limits_.state != nullptr) --limits_.state->streams;
    delete this;
  }

 protected:
  // Call last in the subclass constructor: counts the stream, takes an empty lease of the
  // budget and starts reading (or answers a refused call).
  void Begin() {
    if (limits_.state != nullptr) ++limits_.state->streams;
    if (absl::StatusOr<engine::MemoryBudget::Lease> l =
            engine::MemoryBudget::Reserve(limits_.budget, 0, what_);
        l.ok()) {
      lease_ = std::move(*l);
    }
    if (!gate_.admitted().ok()) {
      Done(gate_.admitted());
      return;
    }
    StartRead(&in_);
  }

  // Each parsed message, before its bytes are appended; an error ends the upload.
  virtual absl::Status OnMessage(const Message& m, bool first) = 0;
  // On the control worker, once every chunk arrived: must call Done.
  virtual void Load() = 0;

  // Finishes the call, first returning the upload's memory (the client may see the status before
  // gRPC calls OnDone), and audits it against the session the client named.
  void Done(const absl::Status& status) {
    bytes_ = std::string();
    lease_.Release();
    gate_.set_session(shown_id_);
    gate_.Audit(status);
    Finish(ToGrpcStatus(status));
  }

  CallGate gate_;
  grpc::CallbackServerContext* ctx_;
  const ServiceLimits limits_;
  const UploadTarget target_;
  std::string shown_id_;  // the session as the client names it
  std::string bytes_;     // the file, whole once Load runs

 private:
  engine::Worker* control_;
  const char* what_;
  grpc::ByteBuffer in_;  // the message being read
  Message message_;      // in_, parsed
  int64_t messages_ = 0;
  engine::MemoryBudget::Lease lease_;  // for bytes_ and its decoded tensors
};

}  // namespace qtrain::rpc
