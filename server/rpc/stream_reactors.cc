#include "server/rpc/stream_reactors.h"

#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {
namespace {

using engine::Session;
using engine::Trainer;

// The session named by a stream's first message; later messages may repeat it, not change it.
absl::Status BindSession(engine::SessionManager* sessions, const std::string& requested,
                         std::shared_ptr<Session>& bound) {
  if (bound == nullptr) {
    if (requested.empty()) {
      return absl::InvalidArgumentError("the first message of a stream must set session_id");
    }
    absl::StatusOr<std::shared_ptr<Session>> s = sessions->Get(requested);
    if (!s.ok()) return s.status();
    bound = std::move(*s);
  } else if (!requested.empty() && requested != bound->id()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "session_id \"", requested, "\" differs from the stream's \"", bound->id(), "\""));
  }
  return absl::OkStatus();
}

// What a policy's Run may consult besides the trainer.
struct RunContext {
  std::string session_id;
  const store::SessionStore* store = nullptr;  // may be null
  Metrics* metrics = nullptr;                  // may be null
};

// "float", "qat" or "qt": how the session's rules run its ops now.
std::string ModeOf(Trainer& t) {
  std::string mode = "float";
  if (t.model().rules() == nullptr) return mode;
  for (const auto& [rule, op] : t.model().Ops()) {
    if (rule < 0) continue;
    const engine::Rule& r = t.model().rules()->rules()[rule];
    if (!r.weight_qtype) continue;
    if (r.bwd_qtype) return "qt";
    mode = "qat";
  }
  return mode;
}

struct TrainPolicy {
  using Request = v1::TrainRequest;
  using Response = v1::TrainResponse;
  using Work = engine::Batch;
  struct State {};
  static constexpr bool kHasFinal = false;

  static bool HasWork(const Request& r) { return r.has_batch(); }
  static absl::StatusOr<Work> Parse(const Request& r, const ServiceLimits& l) {
    return BatchFromWire(r.batch(), l.max_batch_bytes);
  }
  static absl::StatusOr<Response> Run(Trainer& t, const Work& w, State&, const RunContext& c) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<engine::StepResult> r = t.TrainStep(w);
    if (!r.ok()) return r.status();
    if (c.metrics != nullptr) {
      c.metrics->RecordStep(ModeOf(t), SecondsSince(start), r->examples);
      c.metrics->SetLoss(c.session_id, r->loss);
    }
    Response resp;
    resp.set_step(r->step);
    resp.set_loss(r->loss);
    resp.set_accuracy(r->accuracy);
    resp.set_grad_norm(r->grad_norm);
    resp.set_learning_rate(r->learning_rate);
    resp.set_examples(r->examples);
    resp.set_last_durable_step(c.store ? c.store->LastDurableStep(c.session_id) : -1);
    return resp;
  }
  static Response Final(Trainer&, const RunContext&, State&) { return {}; }
};

struct CalibratePolicy {
  using Request = v1::CalibrateRequest;
  using Response = v1::CalibrateResponse;
  using Work = Tensor;
  struct State {
    int64_t batches = 0;
    int64_t examples = 0;
  };
  static constexpr bool kHasFinal = true;

  static bool HasWork(const Request& r) { return r.has_inputs(); }
  static absl::StatusOr<Work> Parse(const Request& r, const ServiceLimits& l) {
    return FromWire(r.inputs(), "inputs", l.max_batch_bytes);
  }
  static absl::StatusOr<Response> Run(Trainer& t, const Work& w, State& state,
                                      const RunContext& c) {
    const auto start = std::chrono::steady_clock::now();
    absl::Status s = t.CalibrateStep(w);
    if (!s.ok()) return s;
    if (c.metrics != nullptr) c.metrics->RecordStep("calibrate", SecondsSince(start), w.dim(0));
    ++state.batches;
    state.examples += w.dim(0);
    Response resp;
    resp.set_batches(state.batches);
    resp.set_examples(state.examples);
    return resp;
  }
  static Response Final(Trainer& t, const RunContext& c, State& state) {
    Response resp;
    resp.set_batches(state.batches);
    resp.set_examples(state.examples);
    FillQuantStats(c.session_id, t, resp.mutable_stats());
    return resp;
  }
};

// A bidirectional stream of per-batch work with one response per batch (and, for policies with
// kHasFinal, one last response after the client half-closes). Decisions are taken under `mu_`;
// the gRPC calls they imply (StartRead / StartWrite / Finish) are made after releasing it.
template <typename Policy>
class StepStream final
    : public grpc::ServerBidiReactor<typename Policy::Request, typename Policy::Response> {
  using Request = typename Policy::Request;
  using Response = typename Policy::Response;

 public:
  StepStream(engine::SessionManager* sessions, ServiceLimits limits,
             const store::SessionStore* store, Metrics* metrics)
      : sessions_(sessions), limits_(limits) {
    context_.store = store;
    context_.metrics = metrics;
    this->StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    Actions a;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;
      } else if (failed_ || finished_) {
        // A read that completes after the stream failed (or finished) is dropped: queuing its
        // work would run it on a reactor that OnDone may already have deleted.
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
      FailLocked(absl::CancelledError("stream cancelled"));
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
    const bool first = session_ == nullptr;
    absl::Status bound = BindSession(sessions_, request_.session_id(), session_);
    if (!bound.ok()) return bound;
    // Written once, before the first task: executor tasks read it without the lock.
    if (first) context_.session_id = session_->id();
    if (!Policy::HasWork(request_)) return absl::OkStatus();
    absl::StatusOr<typename Policy::Work> work = Policy::Parse(request_, limits_);
    if (!work.ok()) return work.status();
    auto shared = std::make_shared<typename Policy::Work>(std::move(*work));
    return SubmitLocked([this, shared](Trainer& t) {
      return Policy::Run(t, *shared, state_, context_);  // executor only
    });
  }

  absl::Status SubmitLocked(std::function<absl::StatusOr<Response>(Trainer&)> task)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++inflight_;
    absl::Status s =
        session_->Submit([this, task = std::move(task)](Trainer& t) { OnWorkDone(task(t)); },
                         Session::Admission::kWindowed);
    if (!s.ok()) --inflight_;
    return s;
  }

  // Runs on the session's executor.
  void OnWorkDone(absl::StatusOr<Response> r) {
    Actions a;
    {
      absl::MutexLock lock(&mu_);
      --inflight_;
      if (r.ok()) {
        pending_.push_back(std::move(*r));
      } else {
        FailLocked(r.status());
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
    const bool drained = reads_done_ && !reading_ && inflight_ == 0;
    if (Policy::kHasFinal && drained && !failed_ && !final_submitted_ && session_ != nullptr) {
      final_submitted_ = true;
      absl::Status s = SubmitLocked([this](Trainer& t) -> absl::StatusOr<Response> {
        return Policy::Final(t, context_, state_);
      });
      if (!s.ok()) FailLocked(s);
    }
    // Finish when nothing runs or writes, and either an error ended the stream (a pending read
    // is cancelled by Finish) or the client half-closed and every result went out.
    const bool over = failed_ || (reads_done_ && !reading_ && pending_.empty() &&
                                  (!Policy::kHasFinal || final_submitted_ || !session_));
    if (inflight_ == 0 && !writing_ && over) {
      finished_ = true;
      a.finish = true;
      a.status = ToGrpcStatus(status_);
      a.read = a.write = false;
    }
    return a;
  }

  void Execute(const Actions& a) {
    if (a.write) this->StartWrite(&response_);
    if (a.read) this->StartRead(&request_);
    if (a.finish) this->Finish(a.status);
  }

  engine::SessionManager* sessions_;
  const ServiceLimits limits_;
  typename Policy::State state_;  // executor only
  RunContext context_;            // session_id set once, before the first task is submitted
  absl::Mutex mu_;
  Request request_;    // written by gRPC while reading_
  Response response_;  // read by gRPC while writing_
  std::shared_ptr<Session> session_ ABSL_GUARDED_BY(mu_);
  std::deque<Response> pending_ ABSL_GUARDED_BY(mu_);
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;  // the constructor's read
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool final_submitted_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
};

// Evaluate: reads batches, evaluates each on the executor, finishes with the example-weighted
// aggregate once the client half-closes and every batch has run.
class EvaluateStream final : public grpc::ServerReadReactor<v1::EvaluateRequest> {
 public:
  EvaluateStream(engine::SessionManager* sessions, ServiceLimits limits,
                 v1::EvaluateResponse* response, Metrics* metrics)
      : sessions_(sessions), limits_(limits), response_(response), metrics_(metrics) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    bool read = false, finish = false;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;
      } else if (!status_.ok() || finished_) {
        // Dropped, as in StepStream: no work may be queued once the stream failed or finished.
      } else if (absl::Status s = AcceptLocked(); !s.ok()) {
        status_ = s;
      }
      Decide(read, finish, status);
    }
    if (read) StartRead(&request_);
    if (finish) Finish(status);
  }

  void OnCancel() override {
    bool read = false, finish = false;
    grpc::Status status;
    {
      absl::MutexLock lock(&mu_);
      if (status_.ok()) status_ = absl::CancelledError("Evaluate cancelled");
      Decide(read, finish, status);
    }
    if (finish) Finish(status);
  }

  void OnDone() override { delete this; }

 private:
  absl::Status AcceptLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (absl::Status s = BindSession(sessions_, request_.session_id(), session_); !s.ok()) {
      return s;
    }
    if (!request_.has_batch()) return absl::OkStatus();
    absl::StatusOr<engine::Batch> batch = BatchFromWire(request_.batch(), limits_.max_batch_bytes);
    if (!batch.ok()) return batch.status();
    auto shared = std::make_shared<engine::Batch>(std::move(*batch));
    const bool update = request_.update_stats();
    ++inflight_;
    absl::Status s = session_->Submit(
        [this, shared, update](Trainer& t) {
          const auto start = std::chrono::steady_clock::now();
          absl::StatusOr<engine::StepResult> r = t.EvalStep(*shared, update);
          if (r.ok() && metrics_ != nullptr) {
            metrics_->RecordStep("evaluate", SecondsSince(start), r->examples);
          }
          bool read = false, finish = false;
          grpc::Status status;
          {
            absl::MutexLock lock(&mu_);
            --inflight_;
            if (!r.ok()) {
              if (status_.ok()) status_ = r.status();
            } else {
              examples_ += r->examples;
              loss_sum_ += r->loss * static_cast<double>(r->examples);
              accuracy_sum_ += r->accuracy * static_cast<double>(r->examples);
              step_ = r->step;
            }
            Decide(read, finish, status);
          }
          if (read) StartRead(&request_);
          if (finish) Finish(status);
        },
        Session::Admission::kWindowed);
    if (!s.ok()) --inflight_;
    return s;
  }

  void Decide(bool& read, bool& finish, grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    const bool failed = !status_.ok();
    if (!reading_ && !reads_done_ && !failed && inflight_ < limits_.max_inflight_batches) {
      reading_ = true;
      read = true;
    }
    if (inflight_ == 0 && (failed || (reads_done_ && !reading_))) {
      finished_ = true;
      finish = true;
      read = false;
      if (!failed && examples_ == 0) {  // a mean over nothing is no answer
        status_ = absl::InvalidArgumentError("Evaluate received no batches: nothing to evaluate");
      } else if (!failed) {
        response_->set_step(step_);
        response_->set_examples(examples_);
        const double n = examples_ > 0 ? static_cast<double>(examples_) : 1.0;
        response_->set_loss(loss_sum_ / n);
        response_->set_accuracy(accuracy_sum_ / n);
      }
      status = ToGrpcStatus(status_);
    }
  }

  engine::SessionManager* sessions_;
  const ServiceLimits limits_;
  v1::EvaluateResponse* response_;
  Metrics* metrics_;  // may be null
  absl::Mutex mu_;
  v1::EvaluateRequest request_;
  std::shared_ptr<Session> session_ ABSL_GUARDED_BY(mu_);
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  bool reading_ ABSL_GUARDED_BY(mu_) = true;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  int64_t examples_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t step_ ABSL_GUARDED_BY(mu_) = 0;
  double loss_sum_ ABSL_GUARDED_BY(mu_) = 0;
  double accuracy_sum_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace

grpc::ServerBidiReactor<v1::TrainRequest, v1::TrainResponse>* NewTrainReactor(
    engine::SessionManager* sessions, ServiceLimits limits, const store::SessionStore* store,
    Metrics* metrics) {
  return new StepStream<TrainPolicy>(sessions, limits, store, metrics);
}

grpc::ServerBidiReactor<v1::CalibrateRequest, v1::CalibrateResponse>* NewCalibrateReactor(
    engine::SessionManager* sessions, ServiceLimits limits, const store::SessionStore* store,
    Metrics* metrics) {
  return new StepStream<CalibratePolicy>(sessions, limits, store, metrics);
}

grpc::ServerReadReactor<v1::EvaluateRequest>* NewEvaluateReactor(engine::SessionManager* sessions,
                                                                 ServiceLimits limits,
                                                                 v1::EvaluateResponse* response,
                                                                 Metrics* metrics) {
  return new EvaluateStream(sessions, limits, response, metrics);
}

}  // namespace qtrain::rpc
