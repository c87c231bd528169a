#include "server/rpc/trainer_service.h"

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

using engine::Session;
using engine::Trainer;

// Runs `task` on the session of the engine id `id` (Caller::Resolve'd; an error is answered) and
// answers the unary call from there.
template <typename Call>
void OnSession(engine::SessionManager* sessions, const absl::StatusOr<std::string>& id, Call* call,
               std::function<absl::Status(Trainer&)> task) {
  if (!id.ok()) {
    call->Reply(id.status());
    return;
  }
  absl::StatusOr<std::shared_ptr<Session>> session = sessions->Get(*id);
  if (!session.ok()) {
    call->Reply(session.status());
    return;
  }
  absl::Status submitted =
      (*session)->Submit([call, task = std::move(task)](Trainer& t) { call->Reply(task(t)); });
  if (!submitted.ok()) call->Reply(submitted);
}

}  // namespace

absl::Status NewSessionQuota::Reserve(const std::string& id, Trainer& t) {
  if (tenants_ == nullptr) return absl::OkStatus();
  QTRAIN_RETURN_IF_ERROR(tenants_->ReserveNewSession(id, t.model().num_parameters()));
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
  const int world = request.has_data_parallel() ? request.data_parallel().world_size() : 1;
  if (world != 1 && !groups_) {
    call->Reply(absl::InvalidArgumentError(absl::StrCat(
        "data_parallel.world_size ", world,
        ": this server has no data-parallel group configured (qtrain-server --dp_rendezvous, "
        "--dp_peers, --dp_secret_file)")));
    return;
  }
  NewSessionQuota quota(call->tenants());
  absl::StatusOr<std::shared_ptr<Session>> session = sessions_->Create(
      *requested, *model, request.rules(), request.optimizer(), request.seed(),
      [this, call, &quota, world](const std::string& id, Trainer& t) -> absl::Status {
        if (world != 1) {
          QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<engine::StepGroup> group, groups_(id, world));
          t.set_step_group(std::move(group));
        }
        QTRAIN_RETURN_IF_ERROR(quota.Reserve(id, t));
        // With a data dir a new session is durable before anyone can see it: a crash right
        // after the answer cannot lose it, and a failed save leaves nothing behind.
        if (store_ != nullptr) {
          QTRAIN_RETURN_IF_ERROR(store_->Save(id, t, DiskLimit(call->tenants(), id)).status());
        }
        FillSession(call->caller().Show(id), t, call->response());
        return absl::OkStatus();
      },
      request.backend());
  if (session.ok() && metrics_ != nullptr) {
    metrics_->SetSessions(static_cast<int64_t>(sessions_->List().size()));
  }
  call->Reply(session.status());
}

grpc::ServerUnaryReactor* TrainerService::GetSession(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::GetSessionRequest, v1::Session>;
  return Call::Start(Gate(ctx, "GetSession"), in, out, [this](Call* call) {
    OnSession(sessions_, call->caller().Resolve(call->request().session_id()), call,
              [call](Trainer& t) {
                FillSession(call->request().session_id(), t, call->response());
                return absl::OkStatus();
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
    *call->response() = CurrentServerInfo(info_, limits_.budget);
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
    const bool deleted = s.ok();
    if (deleted && store_ != nullptr) s = store_->Forget(id);
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
    const std::string id = resolved.value_or("");
    OnSession(sessions_, resolved, call, [this, id, call](Trainer& t) {
      const v1::RuleSet previous =
          t.model().rules() != nullptr ? t.model().rules()->source() : v1::RuleSet();
      absl::Status s = t.SetRules(call->request().rules());
      // With a data dir the new rules are durable before they are acknowledged; if they cannot
      // be saved, the session keeps the rules it had.
      if (s.ok() && store_ != nullptr) {
        absl::StatusOr<store::SavedCheckpoint> saved =
            store_->Save(id, t, DiskLimit(call->tenants(), id));
        if (!saved.ok()) {
          (void)t.SetRules(previous);
          s = saved.status();
        }
      }
      if (s.ok()) FillSession(call->request().session_id(), t, call->response());
      return s;
    });
  });
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* TrainerService::Train(Context* ctx) {
  return NewTrainReactor(Gate(ctx, "Train"), sessions_, limits_, store_, metrics_);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* TrainerService::Evaluate(Context* ctx, Bytes* out) {
  return NewEvaluateReactor(Gate(ctx, "Evaluate"), sessions_, limits_, out, metrics_);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* TrainerService::Calibrate(
    Context* ctx) {
  return NewCalibrateReactor(Gate(ctx, "Calibrate"), sessions_, limits_, store_, metrics_);
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
    auto shared = std::make_shared<Tensor>(std::move(*inputs));
    OnSession(sessions_, call->caller().Resolve(call->request().session_id()), call,
              [shared, call](Trainer& t) {
                absl::StatusOr<Tensor> result = t.Predict(*shared);
                if (!result.ok()) return result.status();
                *call->response()->mutable_outputs() = ToWire(*result);
                return absl::OkStatus();
              });
  });
}

grpc::ServerUnaryReactor* TrainerService::GetQuantStats(Context* ctx, const Bytes* in, Bytes* out) {
  using Call = UnaryCall<v1::GetQuantStatsRequest, v1::QuantStats>;
  return Call::Start(Gate(ctx, "GetQuantStats"), in, out, [this](Call* call) {
    OnSession(sessions_, call->caller().Resolve(call->request().session_id()), call,
              [call](Trainer& t) {
                FillQuantStats(call->request().session_id(), t, call->response());
                return absl::OkStatus();
              });
  });
}

}  // namespace qtrain::rpc
