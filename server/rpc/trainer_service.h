// TrainerService: qtrain.v1.Trainer on gRPC's callback API. Handlers are thin — validate and
// convert the request, hand the work to the session's executor (engine::Session), and finish
// the call from the executor when it is done — so gRPC threads never run kernels.
//
// Thread-safety: gRPC calls the handlers concurrently; all session state is touched only by the
// sessions' executors. The service borrows the SessionManager, which must outlive the server.
#pragma once

#include <cstdint>
#include <utility>

#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/engine/session.h"
#include "server/rpc/stream_reactors.h"

namespace qtrain::rpc {

class TrainerService final : public v1::Trainer::CallbackService {
 public:
  // `store` may be null (no data dir): checkpoints are then download / upload only.
  // `metrics` may be null.
  TrainerService(engine::SessionManager* sessions, store::SessionStore* store, ServiceLimits limits,
                 Metrics* metrics = nullptr)
      : sessions_(sessions), store_(store), limits_(limits), metrics_(metrics) {}

  grpc::ServerUnaryReactor* CreateSession(grpc::CallbackServerContext* ctx,
                                          const v1::CreateSessionRequest* request,
                                          v1::Session* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* ctx,
                                       const v1::GetSessionRequest* request,
                                       v1::Session* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* ctx,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* DeleteSession(grpc::CallbackServerContext* ctx,
                                          const v1::DeleteSessionRequest* request,
                                          v1::DeleteSessionResponse* response) override;
  grpc::ServerUnaryReactor* UpdateRules(grpc::CallbackServerContext* ctx,
                                        const v1::UpdateRulesRequest* request,
                                        v1::Session* response) override;
  grpc::ServerBidiReactor<v1::TrainRequest, v1::TrainResponse>* Train(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerReadReactor<v1::EvaluateRequest>* Evaluate(grpc::CallbackServerContext* ctx,
                                                         v1::EvaluateResponse* response) override;
  grpc::ServerBidiReactor<v1::CalibrateRequest, v1::CalibrateResponse>* Calibrate(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Forward(grpc::CallbackServerContext* ctx,
                                    const v1::ForwardRequest* request,
                                    v1::ForwardResponse* response) override;
  grpc::ServerUnaryReactor* GetQuantStats(grpc::CallbackServerContext* ctx,
                                          const v1::GetQuantStatsRequest* request,
                                          v1::QuantStats* response) override;
  grpc::ServerUnaryReactor* SaveCheckpoint(grpc::CallbackServerContext* ctx,
                                           const v1::SaveCheckpointRequest* request,
                                           v1::CheckpointInfo* response) override;
  grpc::ServerWriteReactor<v1::CheckpointChunk>* DownloadCheckpoint(
      grpc::CallbackServerContext* ctx, const v1::DownloadCheckpointRequest* request) override;
  grpc::ServerReadReactor<v1::CheckpointChunk>* UploadCheckpoint(
      grpc::CallbackServerContext* ctx, v1::CheckpointInfo* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* ctx,
                                          const v1::GetServerInfoRequest* request,
                                          v1::ServerInfo* response) override;

  // What GetServerInfo answers (server_info.h); set once before the server starts.
  void SetServerInfo(v1::ServerInfo info) { info_ = std::move(info); }

 private:
  engine::SessionManager* sessions_;  // not owned
  store::SessionStore* store_;        // not owned; may be null
  ServiceLimits limits_;
  Metrics* metrics_;  // not owned; may be null
  v1::ServerInfo info_;
};

}  // namespace qtrain::rpc
