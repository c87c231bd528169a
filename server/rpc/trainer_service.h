// TrainerService: qtrain.v1.Trainer on gRPC's callback API. Handlers are thin — parse, validate
// and convert the request, call a typed session operation (ops/session_ops.h: it runs on the
// session's executor and keeps the durability policy), and finish the call from its completion —
// so gRPC threads never run kernels.
//
// Thread-safety: gRPC calls the handlers concurrently; all session state is touched only by the
// sessions' executors. The service borrows the SessionOps, which must outlive the server.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>

#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/engine/worker.h"
#include "server/ops/session_ops.h"
#include "server/rpc/stream_reactors.h"
#include "server/rpc/unary_call.h"

namespace qtrain::rpc {

// Every method registered raw: requests are parsed by the service (wire_message.h).
using RawTrainerService = v1::Trainer::WithRawCallbackMethod_CreateSession<
    v1::Trainer::WithRawCallbackMethod_GetSession<v1::Trainer::WithRawCallbackMethod_ListSessions<
        v1::Trainer::WithRawCallbackMethod_DeleteSession<
            v1::Trainer::WithRawCallbackMethod_UpdateRules<
                v1::Trainer::WithRawCallbackMethod_Train<v1::Trainer::WithRawCallbackMethod_Forward<
                    v1::Trainer::WithRawCallbackMethod_GetQuantStats<
                        v1::Trainer::WithRawCallbackMethod_Evaluate<
                            v1::Trainer::WithRawCallbackMethod_Calibrate<
                                v1::Trainer::WithRawCallbackMethod_SaveCheckpoint<
                                    v1::Trainer::WithRawCallbackMethod_DownloadCheckpoint<
                                        v1::Trainer::WithRawCallbackMethod_UploadCheckpoint<
                                            v1::Trainer::WithRawCallbackMethod_GetServerInfo<
                                                v1::Trainer::WithRawCallbackMethod_ImportWeights<
                                                    v1::Trainer::WithRawCallbackMethod_ExportQuantized<
                                                        v1::Trainer::
                                                            WithRawCallbackMethod_AnalyzeSensitivity<
                                                                v1::Trainer::
                                                                    Service>>>>>>>>>>>>>>>>>;

class TrainerService final : public RawTrainerService {
 public:
  // Without a data dir (sessions->durable() false) checkpoints are download / upload only.
  // `metrics` may be null.
  TrainerService(ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics = nullptr)
      : sessions_(sessions), limits_(limits), metrics_(metrics) {}

  using Bytes = grpc::ByteBuffer;
  using Context = grpc::CallbackServerContext;
  grpc::ServerUnaryReactor* CreateSession(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerUnaryReactor* GetSession(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerUnaryReactor* ListSessions(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerUnaryReactor* DeleteSession(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerUnaryReactor* UpdateRules(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerBidiReactor<Bytes, Bytes>* Train(Context*) override;
  grpc::ServerReadReactor<Bytes>* Evaluate(Context*, Bytes* out) override;
  grpc::ServerBidiReactor<Bytes, Bytes>* Calibrate(Context*) override;
  grpc::ServerUnaryReactor* Forward(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerUnaryReactor* GetQuantStats(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerUnaryReactor* SaveCheckpoint(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerWriteReactor<Bytes>* DownloadCheckpoint(Context*, const Bytes* in) override;
  grpc::ServerReadReactor<Bytes>* UploadCheckpoint(Context* ctx, Bytes* out) override;
  grpc::ServerUnaryReactor* GetServerInfo(Context*, const Bytes* in, Bytes* out) override;
  grpc::ServerReadReactor<Bytes>* ImportWeights(Context* ctx, Bytes* out) override;
  grpc::ServerWriteReactor<Bytes>* ExportQuantized(Context* ctx, const Bytes* in) override;
  grpc::ServerBidiReactor<Bytes, Bytes>* AnalyzeSensitivity(Context* ctx) override;

  // What GetServerInfo answers (server_info.h); set once before the server starts.
  void SetServerInfo(v1::ServerInfo info) { info_ = std::move(info); }

 private:
  // While the server drains, answers `call` UNAVAILABLE and returns true (new work refused).
  template <typename Call>
  bool RefusedWhileDraining(Call* call) const {
    if (limits_.state == nullptr || !limits_.state->draining) return false;
    call->Reply(DrainingError());
    return true;
  }
  CallGate Gate(Context* ctx, const char* method) const {
    return CallGate(limits_.access, *ctx, method);
  }
  void Create(UnaryCall<v1::CreateSessionRequest, v1::Session>* call);
  void Delete(UnaryCall<v1::DeleteSessionRequest, v1::DeleteSessionResponse>* call);

  ops::SessionOps* sessions_;  // not owned
  ServiceLimits limits_;
  Metrics* metrics_;  // not owned; may be null
  v1::ServerInfo info_;
  // Control-plane work off gRPC threads (model builds, checkpoint decodes, executor joins), on a
  // few threads so that one long build does not hold up the creations queued behind it.
  static constexpr int kControlThreads = 4;
  // Declared last: destroyed first, running what was posted while the sessions still exist.
  engine::Worker control_{kControlThreads};
};

// The tenant quota of a session being created (tenants may be null: none): Reserve is
// NewSession::reserve; the reservation is released when this goes out of scope, after
// SessionOps::Create returned (the session is registered by then, or gone).
class NewSessionQuota {
 public:
  explicit NewSessionQuota(TenantQuotas* tenants) : tenants_(tenants) {}
  ~NewSessionQuota() {
    if (!id_.empty()) tenants_->ReleaseNewSession(id_);
  }
  NewSessionQuota(const NewSessionQuota&) = delete;
  NewSessionQuota& operator=(const NewSessionQuota&) = delete;
  // ResourceExhausted naming the quota (TenantQuotas::ReserveNewSession).
  absl::Status Reserve(const std::string& id, int64_t parameters);
  // Reserve, as NewSession::reserve.
  std::function<absl::Status(const std::string&, int64_t)> AsReserve() {
    return [this](const std::string& id, int64_t parameters) { return Reserve(id, parameters); };
  }

 private:
  TenantQuotas* tenants_;
  std::string id_;  // reserved
};
// The tenant's max_checkpoint_bytes for SessionStore::Save (0: none).
int64_t DiskLimit(TenantQuotas* tenants, const std::string& id);

}  // namespace qtrain::rpc
