#include "server/rpc/trainer_service.h"

#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/session_id.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/sensitivity_stream.h"
#include "server/rpc/server_info.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/stream_reactors.h"
#include "server/rpc/tensor_convert.h"
#include "server/rpc/unary_call.h"

namespace qtrain::rpc {
namespace {

// Binds the session of the engine id `id` (Caller::Resolve'd) and submits `op` on it; any error
// before the operation is accepted answers the unary call.
template <typename Call>
void OnSession(ops::SessionOps* sessions, const absl::StatusOr<std::string>& id, Call* call,
               const std::function<absl::Status(ops::SessionHandle&)>& op) {
  absl::StatusOr<ops::SessionHandle> session =
      id.ok() ? sessions->Bind(*id) : absl::StatusOr<ops::SessionHandle>(id.status());
  if (!session.ok()) {
    call->Reply(session.status());
    return;
  }
  if (absl::Status submitted = op(*session); !submitted.ok()) call->Reply(submitted);
}

// Completes `call` with the operation's status, after `fill` has written a successful result into
// its response.
template <typename Call, typename T, typename Fill>
ops::Done<T> Answer(Call* call, Fill fill) {
  return [call, fill = std::move(fill)](absl::StatusOr<T> r) {
    if (r.ok()) fill(*r);
    call->Reply(r.status());
  };
}

}  // namespace

absl::Status NewSessionQuota::Reserve(const std::string& id, int64_t parameters) {
  if (tenants_ == nullptr) return absl::OkStatus();
  QTRAIN_RETURN_IF_ERROR(tenants_->ReserveNewSession(id, parameters));
  id_ = id;
  return absl::OkStatus();
}

int64_t DiskLimit(TenantQuotas* tenants, const std::string& id) {
  if (tenants == nullptr) return 0;
  return tenants->QuotaOf(std::string(engine::TenantOf(id))).max_checkpoint_bytes;
}

grpc::ServerUnaryReactor* TrainerService::CreateSession(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::CreateSessionRequest, v1::Session>;
  return Call::Start(Gate(ctx, "CreateSession"), in, out,
                     [this](Call* call) { control_.Post([this, call] { Create(call); }); });
}

// On the control worker: building and initialising the model (bounded by the spec limits and the
// memory budget); every later operation runs on the new session's executor.
void TrainerService::Create(UnaryCall<v1::CreateSessionRequest, v1::Session>* call) {
  if (RefusedWhileDraining(call)) return;
  const v1::CreateSessionRequest& request = call->request();
  absl::StatusOr<std::string> requested = call->caller().Resolve(request.session_id(), true);
  if (!requested.ok()) {
    call->Reply(requested.status());
    return;
  }
  absl::StatusOr<v1::ModelSpec> model = RequestedModel(
      request.has_model(), request.model(), request.has_architecture(), request.architecture());
  if (!model.ok()) {
    call->Reply(model.status());
    return;
  }
  NewSessionQuota quota(call->tenants());
  ops::NewSession create;
  create.id = *requested;
  create.model = *std::move(model);
  create.rules = request.rules();
  create.optimizer = request.optimizer();
  create.seed = request.seed();
  create.backend = request.backend();
  create.world_size = request.has_data_parallel() ? request.data_parallel().world_size() : 1;
  create.reserve = quota.AsReserve();
  create.disk_limit = DiskLimit(call->tenants(), *requested);
  absl::StatusOr<ops::SessionSummary> session = sessions_->Create(create);
  if (session.ok()) {
    FillSession(call->caller().Show(session->id), *session, call->response());
    if (metrics_ != nullptr) metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
  }
  call->Reply(session.status());
}

grpc::ServerUnaryReactor* TrainerService::GetSession(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::GetSessionRequest, v1::Session>;
  return Call::Start(Gate(ctx, "GetSession"), in, out, [this](Call* call) {
    OnSession(sessions_, call->caller().Resolve(call->request().session_id()), call,
              [call](ops::SessionHandle& h) {
                return h.Describe(Answer<Call, ops::SessionSummary>(
                    call, [call](const ops::SessionSummary& summary) {
                      FillSession(call->request().session_id(), summary, call->response());
                    }));
              });
  });
}

grpc::ServerUnaryReactor* TrainerService::ListSessions(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::ListSessionsRequest, v1::ListSessionsResponse>;
  return Call::Start(Gate(ctx, "ListSessions"), in, out, [this](Call* call) {
    for (const engine::SessionInfo& info : sessions_->List()) {
      if (!call->caller().Sees(info.id)) continue;
      v1::Session* s = call->response()->add_sessions();
      s->set_session_id(call->caller().Show(info.id));
      s->set_tenant(std::string(engine::TenantOf(info.id)));
      s->set_step(info.step);
      s->set_parameters(info.parameters);
      s->set_non_trainable(info.non_trainable);
    }
    call->Reply(absl::OkStatus());
  });
}

grpc::ServerUnaryReactor* TrainerService::GetServerInfo(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::GetServerInfoRequest, v1::ServerInfo>;
  return Call::Start(Gate(ctx, "GetServerInfo"), in, out, [this](Call* call) {
    *call->response() = CurrentServerInfo(info_, limits_.devices);
    call->Reply(absl::OkStatus());
  });
}

grpc::ServerUnaryReactor* TrainerService::DeleteSession(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::DeleteSessionRequest, v1::DeleteSessionResponse>;
  // On the control worker: deleting joins the session's executor, which first runs its queue.
  return Call::Start(Gate(ctx, "DeleteSession"), in, out,
                     [this](Call* call) { control_.Post([this, call] { Delete(call); }); });
}

void TrainerService::Delete(UnaryCall<v1::DeleteSessionRequest, v1::DeleteSessionResponse>* call) {
  {
    absl::StatusOr<std::string> resolved = call->caller().Resolve(call->request().session_id());
    if (!resolved.ok()) {
      call->Reply(resolved.status());
      return;
    }
    const std::string& id = *resolved;
    absl::Status s = sessions_->Delete(id);
    // NotFound: nothing happened; any other error is the checkpoint's, after the session stopped.
    const bool deleted = !absl::IsNotFound(s);
    if (metrics_ != nullptr) {
      if (deleted) metrics_->ForgetSession(id);
      metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
    }
    call->Reply(s);
  }
}

grpc::ServerUnaryReactor* TrainerService::UpdateRules(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::UpdateRulesRequest, v1::Session>;
  return Call::Start(Gate(ctx, "UpdateRules"), in, out, [this](Call* call) {
    if (RefusedWhileDraining(call)) return;
    const absl::StatusOr<std::string> resolved =
        call->caller().Resolve(call->request().session_id());
    const int64_t disk_limit = DiskLimit(call->tenants(), resolved.value_or(""));
    OnSession(sessions_, resolved, call, [call, disk_limit](ops::SessionHandle& h) {
      return h.UpdateRules(
          call->request().rules(), disk_limit,
          Answer<Call, ops::SessionSummary>(call, [call](const ops::SessionSummary& summary) {
            FillSession(call->request().session_id(), summary, call->response());
          }));
    });
  });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* TrainerService::Train(Context* ctx) {
  return NewTrainReactor(Gate(ctx, "Train"), sessions_, limits_, metrics_);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::Evaluate(Context* ctx, Bytes* out) {
  return NewEvaluateReactor(Gate(ctx, "Evaluate"), sessions_, limits_, out, metrics_);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* TrainerService::Calibrate(
    Context* ctx) {
  return NewCalibrateReactor(Gate(ctx, "Calibrate"), sessions_, limits_, metrics_);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* TrainerService::AnalyzeSensitivity(
    Context* ctx) {
  return NewSensitivityReactor(Gate(ctx, "AnalyzeSensitivity"), sessions_, limits_, metrics_);
}

grpc::ServerUnaryReactor* TrainerService::Forward(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::ForwardRequest, v1::ForwardResponse>;
  return Call::Start(Gate(ctx, "Forward"), in, out, [this](Call* call) {
    if (RefusedWhileDraining(call)) return;
    absl::StatusOr<Tensor> inputs =
        InputsFromWire(call->request().inputs(), "inputs", limits_.max_batch_bytes);
    if (!inputs.ok()) {
      call->Reply(inputs.status());
      return;
    }
    auto shared = std::make_shared<const Tensor>(std::move(*inputs));
    OnSession(sessions_, call->caller().Resolve(call->request().session_id()), call,
              [shared, call](ops::SessionHandle& h) {
                return h.Forward(shared, Answer<Call, Tensor>(call, [call](const Tensor& outputs) {
                                   *call->response()->mutable_outputs() = ToWire(outputs);
                                 }));
              });
  });
}

grpc::ServerUnaryReactor* TrainerService::GetQuantStats(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::GetQuantStatsRequest, v1::QuantStats>;
  return Call::Start(Gate(ctx, "GetQuantStats"), in, out, [this](Call* call) {
    OnSession(sessions_, call->caller().Resolve(call->request().session_id()), call,
              [call](ops::SessionHandle& h) {
                return h.QuantStats(Answer<Call, ops::QuantStatsSnapshot>(
                    call, [call](const ops::QuantStatsSnapshot& stats) {
                      FillQuantStats(call->request().session_id(), stats, call->response());
                    }));
              });
  });
}

}  // namespace qtrain::rpc
