#include "server/rpc/trainer_service.h"

#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/stream_reactors.h"
#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {
namespace {

using engine::Session;
using engine::Trainer;

// Runs `task` on the session's executor and finishes the unary call from there.
grpc::ServerUnaryReactor* OnSession(grpc::CallbackServerContext* ctx,
                                    engine::SessionManager* sessions, const std::string& id,
                                    std::function<absl::Status(Trainer&)> task) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<std::shared_ptr<Session>> session = sessions->Get(id);
  if (!session.ok()) {
    reactor->Finish(ToGrpcStatus(session.status()));
    return reactor;
  }
  absl::Status submitted = (*session)->Submit(
      [reactor, task = std::move(task)](Trainer& t) { reactor->Finish(ToGrpcStatus(task(t))); });
  if (!submitted.ok()) reactor->Finish(ToGrpcStatus(submitted));
  return reactor;
}

}  // namespace

grpc::ServerUnaryReactor* TrainerService::CreateSession(grpc::CallbackServerContext* ctx,
                                                        const v1::CreateSessionRequest* request,
                                                        v1::Session* response) {
  // Building and initialising the model happens here (bounded by the spec limits); every later
  // operation runs on the new session's executor.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::StatusOr<std::shared_ptr<Session>> session =
      sessions_->Create(request->session_id(), request->model(), request->rules(),
                        request->optimizer(), request->seed());
  if (!session.ok()) {
    reactor->Finish(ToGrpcStatus(session.status()));
    return reactor;
  }
  if (metrics_ != nullptr) metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
  const std::string id = (*session)->id();
  absl::Status submitted = (*session)->Submit([this, reactor, response, id](Trainer& t) {
    // With a data dir a new session is durable before it is acknowledged: a crash right after
    // the answer must not lose it.
    if (store_ != nullptr) {
      absl::StatusOr<store::SavedCheckpoint> saved = store_->Save(id, t);
      if (!saved.ok()) {
        (void)sessions_->Delete(id);  // from its own task: parked, joined elsewhere
        if (metrics_ != nullptr) {
          metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
        }
        reactor->Finish(ToGrpcStatus(saved.status()));
        return;
      }
    }
    FillSession(id, t, response);
    reactor->Finish(grpc::Status::OK);
  });
  if (!submitted.ok()) reactor->Finish(ToGrpcStatus(submitted));
  return reactor;
}

grpc::ServerUnaryReactor* TrainerService::GetSession(grpc::CallbackServerContext* ctx,
                                                     const v1::GetSessionRequest* request,
                                                     v1::Session* response) {
  const std::string id = request->session_id();
  return OnSession(ctx, sessions_, id, [id, response](Trainer& t) {
    FillSession(id, t, response);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainerService::ListSessions(grpc::CallbackServerContext* ctx,
                                                       const v1::ListSessionsRequest*,
                                                       v1::ListSessionsResponse* response) {
  for (const engine::SessionInfo& info : sessions_->List()) {
    v1::Session* s = response->add_sessions();
    s->set_session_id(info.id);
    s->set_step(info.step);
    s->set_parameters(info.parameters);
  }
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TrainerService::GetServerInfo(grpc::CallbackServerContext* ctx,
                                                        const v1::GetServerInfoRequest*,
                                                        v1::ServerInfo* response) {
  *response = info_;
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* TrainerService::DeleteSession(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteSessionRequest* request,
                                                        v1::DeleteSessionResponse*) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  absl::Status s = sessions_->Delete(request->session_id());
  const bool deleted = s.ok();
  if (deleted && store_ != nullptr) s = store_->Forget(request->session_id());
  if (metrics_ != nullptr) {
    if (deleted) metrics_->ForgetSession(request->session_id());
    metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
  }
  reactor->Finish(ToGrpcStatus(s));
  return reactor;
}

grpc::ServerUnaryReactor* TrainerService::UpdateRules(grpc::CallbackServerContext* ctx,
                                                      const v1::UpdateRulesRequest* request,
                                                      v1::Session* response) {
  const std::string id = request->session_id();
  return OnSession(ctx, sessions_, id, [id, request, response](Trainer& t) {
    absl::Status s = t.SetRules(request->rules());
    if (s.ok()) FillSession(id, t, response);
    return s;
  });
}

grpc::ServerBidiReactor<v1::TrainRequest, v1::TrainResponse>* TrainerService::Train(
    grpc::CallbackServerContext*) {
  return NewTrainReactor(sessions_, limits_, store_, metrics_);
}

grpc::ServerReadReactor<v1::EvaluateRequest>* TrainerService::Evaluate(
    grpc::CallbackServerContext*, v1::EvaluateResponse* response) {
  return NewEvaluateReactor(sessions_, limits_, response, metrics_);
}

grpc::ServerBidiReactor<v1::CalibrateRequest, v1::CalibrateResponse>* TrainerService::Calibrate(
    grpc::CallbackServerContext*) {
  return NewCalibrateReactor(sessions_, limits_, store_, metrics_);
}

grpc::ServerUnaryReactor* TrainerService::Forward(grpc::CallbackServerContext* ctx,
                                                  const v1::ForwardRequest* request,
                                                  v1::ForwardResponse* response) {
  absl::StatusOr<Tensor> inputs = FromWire(request->inputs(), "inputs", limits_.max_batch_bytes);
  if (!inputs.ok()) {
    grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
    reactor->Finish(ToGrpcStatus(inputs.status()));
    return reactor;
  }
  auto shared = std::make_shared<Tensor>(std::move(*inputs));
  return OnSession(ctx, sessions_, request->session_id(), [shared, response](Trainer& t) {
    absl::StatusOr<Tensor> out = t.Predict(*shared);
    if (!out.ok()) return out.status();
    *response->mutable_outputs() = ToWire(*out);
    return absl::OkStatus();
  });
}

grpc::ServerUnaryReactor* TrainerService::GetQuantStats(grpc::CallbackServerContext* ctx,
                                                        const v1::GetQuantStatsRequest* request,
                                                        v1::QuantStats* response) {
  const std::string id = request->session_id();
  return OnSession(ctx, sessions_, id, [id, response](Trainer& t) {
    FillQuantStats(id, t, response);
    return absl::OkStatus();
  });
}

}  // namespace qtrain::rpc
