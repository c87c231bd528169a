#include "server/rpc/trainer_service.h"

#include <deque>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/grpc_status.h"
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

void FillSession(const std::string& id, Trainer& t, v1::Session* out) {
  out->set_session_id(id);
  out->set_step(t.step());
  out->set_parameters(t.model().num_parameters());
  *out->mutable_model() = t.model().spec();
  if (t.model().rules() != nullptr) *out->mutable_rules() = t.model().rules()->source();
  for (int index : t.UnusedRules()) out->add_unused_rules(index);
  for (const auto& [rule, op] : t.model().Ops()) {
    v1::QuantizedOp* q = out->add_ops();
    const size_t colon = op.rfind(':');
    q->set_module_path(op.substr(0, colon));
    q->set_op_id(op.substr(colon + 1));
    q->set_rule_index(rule);
  }
}

absl::StatusOr<engine::Batch> BatchFromWire(const v1::Batch& wire, int64_t max_bytes) {
  engine::Batch b;
  if (!wire.has_inputs() || !wire.has_targets()) {
    return absl::InvalidArgumentError("batch: inputs and targets are both required");
  }
  absl::StatusOr<Tensor> inputs = FromWire(wire.inputs(), "batch.inputs", max_bytes);
  if (!inputs.ok()) return inputs.status();
  absl::StatusOr<Tensor> targets = FromWire(wire.targets(), "batch.targets", max_bytes);
  if (!targets.ok()) return targets.status();
  b.inputs = std::move(*inputs);
  b.targets = std::move(*targets);
  return b;
}

// One Train stream. Reads batches and hands each to the session's executor; results are written
// back in order, one write in flight at a time. At most `max_inflight` batches are queued ahead
// of their results (the client is pushed back through gRPC flow control). The stream finishes
// (OK at the client's half-close, or the first error) only once every accepted batch has run, so
// the executor never touches a deleted reactor. Decisions are taken under `mu_`; the gRPC calls
// they imply (StartRead / StartWrite / Finish) are made after releasing it.
class TrainReactor final : public grpc::ServerBidiReactor<v1::TrainRequest, v1::TrainResponse> {
 public:
  TrainReactor(engine::SessionManager* sessions, ServiceLimits limits)
      : sessions_(sessions), limits_(limits) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    Actions a;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;
      } else if (absl::Status s = AcceptLocked(); !s.ok()) {
        FailLocked(s);
      }
      a = NextLocked();
    }
    Execute(a);
  }

  void OnWriteDone(bool ok) override {
    Actions a;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) FailLocked(absl::CancelledError("the client stopped reading results"));
      a = NextLocked();
    }
    Execute(a);
  }

  void OnCancel() override {
    Actions a;
    {
      absl::MutexLock lock(&mu_);
      FailLocked(absl::CancelledError("Train stream cancelled"));
      a = NextLocked();
    }
    Execute(a);
  }

  void OnDone() override { delete this; }

 private:
  struct Actions {
    bool read = false;
    bool write = false;
    bool finish = false;
    grpc::Status status;
  };

  absl::Status AcceptLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (session_ == nullptr) {
      if (request_.session_id().empty()) {
        return absl::InvalidArgumentError("the first TrainRequest must set session_id");
      }
      absl::StatusOr<std::shared_ptr<Session>> s = sessions_->Get(request_.session_id());
      if (!s.ok()) return s.status();
      session_ = std::move(*s);
    } else if (!request_.session_id().empty() && request_.session_id() != session_->id()) {
      return absl::InvalidArgumentError(absl::StrCat("session_id \"", request_.session_id(),
                                                     "\" differs from the stream's \"",
                                                     session_->id(), "\""));
    }
    if (!request_.has_batch()) return absl::OkStatus();
    absl::StatusOr<engine::Batch> batch = BatchFromWire(request_.batch(), limits_.max_batch_bytes);
    if (!batch.ok()) return batch.status();
    auto shared = std::make_shared<engine::Batch>(std::move(*batch));
    ++inflight_;
    absl::Status submitted =
        session_->Submit([this, shared](Trainer& t) { OnStepDone(t.TrainStep(*shared)); });
    if (!submitted.ok()) --inflight_;
    return submitted;
  }

  // Runs on the session's executor.
  void OnStepDone(absl::StatusOr<engine::StepResult> r) {
    Actions a;
    {
      absl::MutexLock lock(&mu_);
      --inflight_;
      if (!r.ok()) {
        FailLocked(r.status());
      } else {
        v1::TrainResponse resp;
        resp.set_step(r->step);
        resp.set_loss(r->loss);
        resp.set_accuracy(r->accuracy);
        resp.set_grad_norm(r->grad_norm);
        resp.set_learning_rate(r->learning_rate);
        resp.set_examples(r->examples);
        pending_.push_back(std::move(resp));
      }
      a = NextLocked();
    }
    Execute(a);
  }

  void FailLocked(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!failed_) {
      failed_ = true;
      status_ = s;
    }
  }

  Actions NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Actions a;
    if (finished_) return a;
    if (!writing_ && !failed_ && !pending_.empty()) {
      writing_ = true;
      response_ = std::move(pending_.front());
      pending_.pop_front();
      a.write = true;
    }
    const int64_t ahead = inflight_ + static_cast<int64_t>(pending_.size());
    if (!reading_ && !reads_done_ && !failed_ && ahead < limits_.max_inflight_batches) {
      reading_ = true;
      a.read = true;
    }
    // Finish when nothing runs or writes, and either an error ended the stream (a pending read
    // is cancelled by Finish) or the client half-closed and every result went out.
    const bool over = failed_ || (reads_done_ && !reading_ && pending_.empty());
    if (inflight_ == 0 && !writing_ && over) {
      finished_ = true;
      a.finish = true;
      a.status = ToGrpcStatus(status_);
      a.read = a.write = false;
    }
    return a;
  }

  void Execute(const Actions& a) {
    if (a.write) StartWrite(&response_);
    if (a.read) StartRead(&request_);
    if (a.finish) Finish(a.status);
  }

  engine::SessionManager* sessions_;
  const ServiceLimits limits_;
  absl::Mutex mu_;
  v1::TrainRequest request_;    // written by gRPC while reading_
  v1::TrainResponse response_;  // read by gRPC while writing_
  std::shared_ptr<Session> session_ ABSL_GUARDED_BY(mu_);
  std::deque<v1::TrainResponse> pending_ ABSL_GUARDED_BY(mu_);
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;  // the constructor's read
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

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
  const std::string id = (*session)->id();
  absl::Status submitted = (*session)->Submit([reactor, response, id](Trainer& t) {
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

grpc::ServerUnaryReactor* TrainerService::DeleteSession(grpc::CallbackServerContext* ctx,
                                                        const v1::DeleteSessionRequest* request,
                                                        v1::DeleteSessionResponse*) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(sessions_->Delete(request->session_id())));
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
  return new TrainReactor(sessions_, limits_);
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
    response->set_session_id(id);
    response->set_step(t.step());
    for (const engine::QuantStatReport& r : t.QuantStatsReport()) {
      v1::QuantStat* s = response->add_stats();
      s->set_module_path(r.module_path);
      s->set_name(r.stat_name);
      s->set_count(r.stat->count);
      if (r.stat->symmetric) {
        *s->mutable_sum_of_absmax() = ToWire(r.stat->sum_of_absmax);
      } else {
        *s->mutable_sum_of_min() = ToWire(r.stat->sum_of_min);
        *s->mutable_sum_of_max() = ToWire(r.stat->sum_of_max);
      }
      if (r.qtype) s->set_qtype(QTypeName(*r.qtype));
      if (r.params.ok()) {
        *s->mutable_scale() = ToWire(r.params->scale);
        if (!r.params->symmetric()) *s->mutable_zero_point() = ToWire(r.params->zero_point);
      } else {
        s->set_scale_error(std::string(r.params.status().message()));
      }
    }
    return absl::OkStatus();
  });
}

}  // namespace qtrain::rpc
