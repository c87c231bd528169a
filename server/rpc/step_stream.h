// The state machine shared by the streaming RPCs (stream_reactors.h, sensitivity_stream.h),
// parametrized by a policy: what a message carries, the work it implies on the session's executor
// and what goes back. Internal to server/rpc.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"
#include "server/engine/session_id.h"
#include "server/ops/session_ops.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/stream_reactors.h"
#include "server/rpc/wire_message.h"

namespace qtrain::rpc::internal {

// The session named by a stream's first message (scoped to the caller's tenant); later messages
// may repeat it, not change it.
inline absl::Status BindSession(ops::SessionOps* sessions, const Caller& caller,
                                const std::string& requested,
                                std::optional<ops::SessionHandle>& bound) {
  if (!bound) {
    if (requested.empty()) {
      return absl::InvalidArgumentError("the first message of a stream must set session_id");
    }
    QTRAIN_ASSIGN_OR_RETURN(const std::string id, caller.Resolve(requested));
    QTRAIN_ASSIGN_OR_RETURN(ops::SessionHandle handle, sessions->Bind(id));
    bound = std::move(handle);
  } else if (!requested.empty() && caller.Resolve(requested).value_or("") != bound->id()) {
    return absl::InvalidArgumentError(absl::StrCat("session_id \"", requested,
                                                   "\" differs from the stream's \"",
                                                   caller.Show(bound->id()), "\""));
  }
  return absl::OkStatus();
}

// What a policy may consult besides the session.
struct RunContext {
  std::string session_id;
  std::string shown_id;                    // session_id as the caller names it (responses)
  Metrics* metrics = nullptr;              // may be null
  engine::MemoryBudget* budget = nullptr;  // may be null: what the stream holds is unbounded
};

// The one state machine of the streaming RPCs: reads requests (parsed here: a message that does
// not parse ends the stream INVALID_ARGUMENT), runs each batch as a typed session operation
// (Policy::Start, ops/session_ops.h, completing on the session's executor), and
// writes per-batch results in order (kStreamsResults) and, for policies with kHasFinal, a last
// result after the client half-closes — as the last stream message, or as the answer of a
// client-streaming call. Policy::FinalAgain(state), asked on the executor after each final
// operation, runs Final once more (a long job as a series of tasks, each answering its progress, so
// that other calls on the session run between them and a cancellation stops it). Decisions are
// taken under `mu_`; the gRPC calls they imply (StartRead / StartWrite / Finish) are made after
// releasing it. The policy's reactor type; streams that write results also receive OnWriteDone.
template <typename Policy, bool kWrites = Policy::kStreamsResults>
class StreamReactor : public Policy::Reactor {
 protected:
  virtual void WriteDone(bool ok) = 0;
};
template <typename Policy>
class StreamReactor<Policy, true> : public Policy::Reactor {
 public:
  void OnWriteDone(bool ok) override { WriteDone(ok); }

 protected:
  virtual void WriteDone(bool ok) = 0;
};

template <typename Policy>
class StepStream final : public StreamReactor<Policy> {
  using Request = typename Policy::Request;
  using Response = typename Policy::Response;

 public:
  // `answer`: where a client-streaming call's final response goes (gRPC's); null for bidi.
  StepStream(CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics,
             grpc::ByteBuffer* answer)
      : gate_(std::move(gate)), sessions_(sessions), limits_(limits), answer_(answer) {
    if (limits_.state != nullptr) ++limits_.state->streams;
    context_.metrics = metrics;
    context_.budget = limits_.budget;
    Policy::Init(state_, context_);
    if (!gate_.admitted().ok()) {
      qtrain::MutexLock lock(&mu_);
      reading_ = false;
      finished_ = true;
      status_ = gate_.admitted();
      gate_.Audit(status_);
      this->Finish(ToGrpcStatus(status_));
      return;
    }
    this->StartRead(&in_);
  }

  void OnReadDone(bool ok) override {
    // Parsing and converting run before the lock: with one read outstanding at a time, in_,
    // request_ and messages_ belong to this callback until the next StartRead.
    absl::Status parsed;
    absl::StatusOr<std::shared_ptr<const typename Policy::Work>> work = nullptr;
    if (ok) {
      ++messages_;
      parsed = ParseWire(in_, &request_,
                         absl::StrCat("message ", messages_, " of the ", Policy::kName, " stream"));
      if (parsed.ok() && Policy::HasWork(request_)) {
        absl::StatusOr<typename Policy::Work> w = Policy::Parse(request_, limits_, messages_);
        if (w.ok()) {
          work = std::make_shared<const typename Policy::Work>(*std::move(w));
        } else {
          work = w.status();
        }
      }
    }
    Actions a;
    {
      qtrain::MutexLock lock(&mu_);
      reading_ = false;
      if (!ok) {
        reads_done_ = true;  // half-close or cancellation: never a message that failed to parse
      } else if (failed_ || finished_) {
        // A read that completes after the stream failed (or finished) is dropped: queuing its
        // work would run it on a reactor that OnDone may already have deleted.
      } else if (limits_.state != nullptr && limits_.state->draining) {
        FailLocked(DrainingError());  // what was accepted before still runs and answers
      } else if (absl::Status s = parsed.ok() ? AcceptLocked(std::move(work)) : parsed; !s.ok()) {
        FailLocked(s);
      }
      a = NextLocked();
    }
    Execute(a);
  }

  void WriteDone(bool ok) override {
    Actions a;
    {
      qtrain::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) FailLocked(absl::CancelledError("the client stopped reading results"));
      a = NextLocked();
    }
    Execute(a);
  }

  void OnCancel() override {
    Actions a;
    {
      qtrain::MutexLock lock(&mu_);
      FailLocked(absl::CancelledError(absl::StrCat(Policy::kName, " stream cancelled")));
      a = NextLocked();
    }
    Execute(a);
  }

  void OnDone() override {
    if (limits_.state != nullptr) --limits_.state->streams;
    // A task's OnWorkDone may have decided the Finish that led here and still be unlocking mu_
    // on the executor: wait until its last touch of this reactor (executing_) before freeing it.
    while (executing_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    delete this;
  }

 private:
  struct Actions {
    bool read = false;
    bool write = false;
    bool finish = false;
    grpc::Status status;
  };

  // Binds the stream's session (the first message names it) and queues the message's work
  // (null: the message carries none; an error: its conversion failed).
  absl::Status AcceptLocked(absl::StatusOr<std::shared_ptr<const typename Policy::Work>> work)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const bool first = !session_;
    if (first) gate_.set_session(request_.session_id());        // audited also when it is refused
    if (!first) QTRAIN_RETURN_IF_ERROR(gate_.StillAdmitted());  // a revoked token ends the stream
    if (const char* method = Policy::Escalates(request_)) {
      QTRAIN_RETURN_IF_ERROR(gate_.Escalate(method));
    }
    QTRAIN_RETURN_IF_ERROR(BindSession(sessions_, gate_.caller(), request_.session_id(), session_));
    if (first) {
      // Written once, before the first task: executor tasks read it without the lock.
      context_.session_id = session_->id();
      context_.shown_id = gate_.caller().Show(session_->id());
      // One of the session's tenant's stream slots, held until OnDone.
      const std::string tenant(engine::TenantOf(session_->id()));
      if (gate_.tenants() != nullptr && !tenant.empty()) {
        QTRAIN_RETURN_IF_ERROR(gate_.tenants()->AcquireStream(tenant));
        slot_tenant_ = tenant;
      }
    }
    if (!work.ok()) return work.status();
    if (*work == nullptr) return absl::OkStatus();
    return SubmitLocked(/*final=*/false,
                        [this, shared = *std::move(work)](ops::SessionHandle& h, Reply done) {
                          return Policy::Start(h, shared, state_, context_, std::move(done));
                        });
  }

  using Reply = std::function<void(absl::StatusOr<Response>)>;
  // `start` submits one operation on the session whose completion (on the executor) calls the
  // Reply it is given; when it fails to submit, the Reply is never called.
  absl::Status SubmitLocked(bool final,
                            const std::function<absl::Status(ops::SessionHandle&, Reply)>& start)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ++inflight_;
    executing_.fetch_add(1, std::memory_order_relaxed);
    absl::Status s = start(*session_, [this, final](absl::StatusOr<Response> r) {
      const bool again = final && r.ok() && Policy::FinalAgain(state_);
      OnWorkDone(final, std::move(r), again);
      executing_.fetch_sub(1, std::memory_order_release);  // the last touch of this
    });
    if (!s.ok()) {
      --inflight_;
      executing_.fetch_sub(1, std::memory_order_relaxed);
    }
    return s;
  }

  // Runs on the session's executor.
  void OnWorkDone(bool final, absl::StatusOr<Response> r, bool again) {
    Actions a;
    {
      qtrain::MutexLock lock(&mu_);
      --inflight_;
      if (again) final_submitted_ = false;  // NextLocked submits the next part
      if (!r.ok()) {
        FailLocked(r.status());
      } else if (Policy::kStreamsResults) {
        pending_.push_back(*std::move(r));
      } else if (final) {
        answer_status_ = SerializeWire(*r, answer_);
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
      if (absl::Status s = SerializeWire(pending_.front(), &out_); !s.ok()) {
        FailLocked(s);
      } else {
        writing_ = true;
        a.write = true;
      }
      pending_.pop_front();
    }
    const int64_t ahead = inflight_ + static_cast<int64_t>(pending_.size());
    if (!reading_ && !reads_done_ && !failed_ && ahead < limits_.max_inflight_batches) {
      reading_ = true;
      a.read = true;
    }
    const bool drained = reads_done_ && !reading_ && inflight_ == 0;
    if (Policy::kHasFinal && drained && !failed_ && !final_submitted_ && session_ &&
        final_parts_ > 0 && limits_.state != nullptr && limits_.state->draining) {
      FailLocked(DrainingError());  // a multi-part final stops between its parts
    }
    if (Policy::kHasFinal && drained && !failed_ && !final_submitted_ && session_) {
      final_submitted_ = true;
      ++final_parts_;
      absl::Status s = SubmitLocked(/*final=*/true, [this](ops::SessionHandle& h, Reply done) {
        return Policy::Final(h, state_, context_, std::move(done));
      });
      if (!s.ok()) FailLocked(s);
    }
    if (drained && !failed_ && !session_) FailLocked(Policy::Empty());
    // Finish when nothing runs or writes, no other thread is about to start a read or write
    // (issuing_: Finish could otherwise free the reactor under it), and either an error ended
    // the stream (a pending read is cancelled by Finish) or the client half-closed and every
    // result went out.
    const bool over = failed_ || (drained && pending_.empty() &&
                                  (!Policy::kHasFinal || final_submitted_ || !session_));
    if (inflight_ == 0 && !writing_ && issuing_ == 0 && over) {
      if (!failed_ && !answer_status_.ok()) FailLocked(answer_status_);
      finished_ = true;
      gate_.Audit(status_);
      // The tenant's stream slot is free once the client can see the status: gRPC may call
      // OnDone later, after the client has started its next stream.
      if (slot_tenant_) {
        gate_.tenants()->ReleaseStream(*slot_tenant_);
        slot_tenant_.reset();
      }
      a.finish = true;
      a.status = ToGrpcStatus(status_);
      a.read = a.write = false;
    }
    if (a.read || a.write) ++issuing_;
    return a;
  }

  // Carries out NextLocked's decisions without the lock. After starting a read or a write it
  // decides again: a Finish that waited for it (issuing_) happens here.
  void Execute(Actions a) {
    while (true) {
      if (a.finish) {
        this->Finish(a.status);
        return;
      }
      if (!a.read && !a.write) return;
      if constexpr (Policy::kStreamsResults) {
        if (a.write) this->StartWrite(&out_);
      }
      if (a.read) this->StartRead(&in_);
      qtrain::MutexLock lock(&mu_);
      --issuing_;
      a = NextLocked();
    }
  }

  CallGate gate_;  // who calls; set_session once, under mu_, before the audit reads it
  ops::SessionOps* sessions_;
  const ServiceLimits limits_;
  std::optional<std::string> slot_tenant_ ABSL_GUARDED_BY(mu_);  // whose stream slot this holds
  grpc::ByteBuffer* answer_;      // client streaming: the final response goes here (gRPC's)
  typename Policy::State state_;  // the operations' completions only (on the executor)
  RunContext context_;            // session_id set once, before the first task is submitted
  qtrain::Mutex mu_;
  // Operations submitted and not yet past OnWorkDone: OnDone frees the reactor only at 0.
  std::atomic<int> executing_{0};
  grpc::ByteBuffer in_;   // written by gRPC while reading_
  grpc::ByteBuffer out_;  // read by gRPC while writing_
  Request request_;       // in_, parsed: owned by the read in flight (OnReadDone)
  int64_t messages_ = 0;  // messages read so far: likewise
  std::optional<ops::SessionHandle> session_ ABSL_GUARDED_BY(mu_);
  std::deque<Response> pending_ ABSL_GUARDED_BY(mu_);
  int64_t inflight_ ABSL_GUARDED_BY(mu_) = 0;
  int issuing_ ABSL_GUARDED_BY(mu_) = 0;      // Execute calls between a decision and its Start*
  bool reading_ ABSL_GUARDED_BY(mu_) = true;  // the constructor's read
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  bool final_submitted_ ABSL_GUARDED_BY(mu_) = false;
  int final_parts_ ABSL_GUARDED_BY(mu_) = 0;  // Final tasks submitted so far
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Status answer_status_ ABSL_GUARDED_BY(mu_);  // serializing the final answer
};

}  // namespace qtrain::rpc::internal
