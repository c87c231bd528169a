#include "server/rpc/stream_reactors.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>

#include "absl/strings/str_cat.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/step_stream.h"
#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {
namespace {

using internal::RunContext;
using internal::StepStream;
using ops::Admission;
template <typename Response>
using Reply = std::function<void(absl::StatusOr<Response>)>;

// Streams keep a few batches in flight (ServiceLimits::max_inflight_batches), so they wait their
// turn on a busy session rather than fail.
constexpr Admission kStream = Admission::kWindowed;

struct TrainPolicy {
  using Request = v1::TrainRequest;
  using Response = v1::TrainResponse;
  using Reactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;
  using Work = engine::Batch;
  struct State {};
  static constexpr char kName[] = "Train";
  static constexpr bool kStreamsResults = true;  // one response per batch
  static constexpr bool kHasFinal = false;

  static bool HasWork(const Request& r) { return r.has_batch(); }
  // The method whose role a message needs beyond the stream's own (none).
  static const char* Escalates(const Request&) { return nullptr; }
  static absl::StatusOr<Work> Parse(const Request& r, const ServiceLimits& l, int64_t) {
    return BatchFromWire(r.batch(), l.max_batch_bytes);
  }
  static void Init(State&, const RunContext&) {}
  static absl::Status Start(ops::SessionHandle& h, std::shared_ptr<const Work> w, State&,
                            const RunContext& c, Reply<Response> done) {
    return h.Train(
        std::move(w),
        [&c, done = std::move(done)](absl::StatusOr<ops::TrainResult> r) {
          if (!r.ok()) return done(r.status());
          if (c.metrics != nullptr) {
            c.metrics->RecordStep(r->mode, r->seconds, r->step.examples);
            c.metrics->SetLoss(c.session_id, r->step.loss);
            if (r->world_size > 1) {
              c.metrics->RecordAllReduce(r->reduce.reduce_seconds, r->reduce.exposed_seconds);
            }
          }
          Response resp;
          resp.set_step(r->step.step);
          resp.set_loss(r->step.loss);
          resp.set_accuracy(r->step.accuracy);
          resp.set_grad_norm(r->step.grad_norm);
          resp.set_learning_rate(r->step.learning_rate);
          resp.set_examples(r->step.examples);
          resp.set_last_durable_step(r->last_durable_step);
          done(std::move(resp));
        },
        kStream);
  }
  static absl::Status Final(ops::SessionHandle&, State&, const RunContext&, Reply<Response>) {
    return absl::OkStatus();  // kHasFinal is false: never called
  }
  static bool FinalAgain(const State&) { return false; }
  static absl::Status Empty() { return absl::OkStatus(); }
};

struct CalibratePolicy {
  using Request = v1::CalibrateRequest;
  using Response = v1::CalibrateResponse;
  using Reactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;
  using Work = Tensor;
  struct State {
    int64_t batches = 0;
    int64_t examples = 0;
  };
  static constexpr char kName[] = "Calibrate";
  static constexpr bool kStreamsResults = true;
  static constexpr bool kHasFinal = true;  // the quant stats, after the client half-closes

  static bool HasWork(const Request& r) { return r.has_inputs(); }
  static const char* Escalates(const Request&) { return nullptr; }
  static absl::StatusOr<Work> Parse(const Request& r, const ServiceLimits& l, int64_t) {
    return InputsFromWire(r.inputs(), "inputs", l.max_batch_bytes);
  }
  static void Init(State&, const RunContext&) {}
  static absl::Status Start(ops::SessionHandle& h, std::shared_ptr<const Work> w, State& state,
                            const RunContext& c, Reply<Response> done) {
    return h.Calibrate(
        std::move(w),
        [&state, &c, done = std::move(done)](absl::StatusOr<ops::CalibrateResult> r) {
          if (!r.ok()) return done(r.status());
          if (c.metrics != nullptr) c.metrics->RecordStep("calibrate", r->seconds, r->examples);
          ++state.batches;
          state.examples += r->examples;
          Response resp;
          resp.set_batches(state.batches);
          resp.set_examples(state.examples);
          done(std::move(resp));
        },
        kStream);
  }
  static absl::Status Final(ops::SessionHandle& h, State& state, const RunContext& c,
                            Reply<Response> done) {
    return h.QuantStats(
        [&state, &c, done = std::move(done)](absl::StatusOr<ops::QuantStatsSnapshot> stats) {
          if (!stats.ok()) return done(stats.status());
          Response resp;
          resp.set_batches(state.batches);
          resp.set_examples(state.examples);
          FillQuantStats(c.shown_id, *stats, resp.mutable_stats());
          done(std::move(resp));
        },
        kStream);
  }
  static bool FinalAgain(const State&) { return false; }
  static absl::Status Empty() { return absl::OkStatus(); }
};

// Evaluate: client streaming; per-batch results are summed, weighted by what each loss counted;
// one answer at the end.
struct EvaluatePolicy {
  using Request = v1::EvaluateRequest;
  using Response = v1::EvaluateResponse;
  using Reactor = grpc::ServerReadReactor<grpc::ByteBuffer>;
  struct Work {
    engine::Batch batch;
    bool update_stats = false;
  };
  struct State {
    int64_t examples = 0;
    int64_t counted = 0;  // what the losses averaged over (tokens not ignored)
    int64_t step = 0;
    double loss_sum = 0;
    double accuracy_sum = 0;
    bool token_level = false;
  };
  static constexpr char kName[] = "Evaluate";
  static constexpr bool kStreamsResults = false;
  static constexpr bool kHasFinal = true;

  static bool HasWork(const Request& r) { return r.has_batch(); }
  // update_stats changes the session's quant stats, as Calibrate does: it needs Calibrate's role
  // and is audited.
  static const char* Escalates(const Request& r) {
    return r.update_stats() ? "Calibrate" : nullptr;
  }
  static absl::StatusOr<Work> Parse(const Request& r, const ServiceLimits& l, int64_t) {
    absl::StatusOr<engine::Batch> batch = BatchFromWire(r.batch(), l.max_batch_bytes);
    if (!batch.ok()) return batch.status();
    return Work{*std::move(batch), r.update_stats()};
  }
  static void Init(State&, const RunContext&) {}
  static absl::Status Start(ops::SessionHandle& h, std::shared_ptr<const Work> w, State& state,
                            const RunContext& c, Reply<Response> done) {
    std::shared_ptr<const engine::Batch> batch(w, &w->batch);  // shares the Work
    return h.Evaluate(
        std::move(batch), w->update_stats,
        [&state, &c, done = std::move(done)](absl::StatusOr<ops::EvalResult> r) {
          if (!r.ok()) return done(r.status());
          if (c.metrics != nullptr) {
            c.metrics->RecordStep("evaluate", r->seconds, r->step.examples);
          }
          state.examples += r->step.examples;
          state.step = r->step.step;
          state.token_level = r->token_level;
          if (r->step.counted > 0) {  // every target ignored: its mean is no number
            state.counted += r->step.counted;
            state.loss_sum += r->step.loss * static_cast<double>(r->step.counted);
            state.accuracy_sum += r->step.accuracy * static_cast<double>(r->step.counted);
          }
          done(Response());
        },
        kStream);
  }
  // Answers from what the batches summed, once the session has run them.
  static absl::Status Final(ops::SessionHandle& h, State& state, const RunContext&,
                            Reply<Response> done) {
    return h.Step(
        [&state, done = std::move(done)](absl::StatusOr<int64_t>) { done(Summary(state)); },
        kStream);
  }
  static absl::StatusOr<Response> Summary(const State& state) {
    if (state.examples == 0) return Empty();  // a mean over nothing is no answer
    Response resp;
    resp.set_step(state.step);
    resp.set_examples(state.examples);
    // Weighted by what each batch counted: the metrics of one batch holding them all.
    const double n = static_cast<double>(std::max<int64_t>(state.counted, 1));
    resp.set_loss(state.loss_sum / n);
    resp.set_accuracy(state.counted > 0 ? state.accuracy_sum / n : -1);
    // Labels per position (outputs (T, vocab) per example) under cross-entropy: token level.
    if (state.token_level && state.counted > 0) {
      resp.set_tokens(state.counted);
      resp.set_perplexity(std::exp(resp.loss()));
    }
    return resp;
  }
  static bool FinalAgain(const State&) { return false; }
  static absl::Status Empty() {
    return absl::InvalidArgumentError("Evaluate received no batches: nothing to evaluate");
  }
};

}  // namespace

absl::Status DrainingError() {
  return absl::UnavailableError(
      "qtrain-server is draining (shutting down): it accepts no new work; retry on another "
      "replica or once it has restarted (sessions are saved and restored)");
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewTrainReactor(
    CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics) {
  return new StepStream<TrainPolicy>(std::move(gate), sessions, limits, metrics, nullptr);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewCalibrateReactor(
    CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics) {
  return new StepStream<CalibratePolicy>(std::move(gate), sessions, limits, metrics, nullptr);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* NewEvaluateReactor(CallGate gate,
                                                              ops::SessionOps* sessions,
                                                              ServiceLimits limits,
                                                              grpc::ByteBuffer* response,
                                                              Metrics* metrics) {
  return new StepStream<EvaluatePolicy>(std::move(gate), sessions, limits, metrics, response);
}

}  // namespace qtrain::rpc
