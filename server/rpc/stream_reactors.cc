#include "server/rpc/stream_reactors.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/step_stream.h"
#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {
namespace {

using engine::Trainer;
using internal::RunContext;
using internal::StepStream;

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
  static absl::StatusOr<Response> Run(Trainer& t, const Work& w, State&, const RunContext& c) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<engine::StepResult> r = t.TrainStep(w);
    if (!r.ok()) return r.status();
    if (c.metrics != nullptr) {
      c.metrics->RecordStep(ModeOf(t), SecondsSince(start), r->examples);
      c.metrics->SetLoss(c.session_id, r->loss);
      if (t.step_group() != nullptr && t.step_group()->world_size() > 1) {
        c.metrics->RecordAllReduce(t.last_reduce_times().reduce_seconds,
                                   t.last_reduce_times().exposed_seconds);
      }
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
  static absl::StatusOr<Response> Final(Trainer&, const RunContext&, State&) { return Response(); }
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
  static absl::StatusOr<Response> Final(Trainer& t, const RunContext& c, State& state) {
    Response resp;
    resp.set_batches(state.batches);
    resp.set_examples(state.examples);
    FillQuantStats(c.shown_id, t, resp.mutable_stats());
    return resp;
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
  static absl::StatusOr<Response> Run(Trainer& t, const Work& w, State& state,
                                      const RunContext& c) {
    const auto start = std::chrono::steady_clock::now();
    absl::StatusOr<engine::StepResult> r = t.EvalStep(w.batch, w.update_stats);
    if (!r.ok()) return r.status();
    if (c.metrics != nullptr) c.metrics->RecordStep("evaluate", SecondsSince(start), r->examples);
    state.examples += r->examples;
    state.step = r->step;
    if (r->counted == 0) return Response();  // every target ignored: its mean is no number
    state.counted += r->counted;
    state.loss_sum += r->loss * static_cast<double>(r->counted);
    state.accuracy_sum += r->accuracy * static_cast<double>(r->counted);
    return Response();
  }
  static absl::StatusOr<Response> Final(Trainer& t, const RunContext&, State& state) {
    if (state.examples == 0) return Empty();  // a mean over nothing is no answer
    Response resp;
    resp.set_step(state.step);
    resp.set_examples(state.examples);
    // Weighted by what each batch counted: the metrics of one batch holding them all.
    const double n = static_cast<double>(std::max<int64_t>(state.counted, 1));
    resp.set_loss(state.loss_sum / n);
    resp.set_accuracy(state.counted > 0 ? state.accuracy_sum / n : -1);
    // Labels per position (outputs (T, vocab) per example) under cross-entropy: token level.
    const bool token_level = t.model().spec().loss().kind() == v1::Loss::SOFTMAX_CROSS_ENTROPY &&
                             t.model().output_shape().size() >= 2;
    if (token_level && state.counted > 0) {
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
    CallGate gate, engine::SessionManager* sessions, ServiceLimits limits,
    const store::SessionStore* store, Metrics* metrics) {
  return new StepStream<TrainPolicy>(std::move(gate), sessions, limits, store, metrics, nullptr);
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewCalibrateReactor(
    CallGate gate, engine::SessionManager* sessions, ServiceLimits limits,
    const store::SessionStore* store, Metrics* metrics) {
  return new StepStream<CalibratePolicy>(std::move(gate), sessions, limits, store, metrics,
                                         nullptr);
}

grpc::ServerReadReactor<grpc::ByteBuffer>* NewEvaluateReactor(CallGate gate,
                                                              engine::SessionManager* sessions,
                                                              ServiceLimits limits,
                                                              grpc::ByteBuffer* response,
                                                              Metrics* metrics) {
  return new StepStream<EvaluatePolicy>(std::move(gate), sessions, limits, nullptr, metrics,
                                        response);
}

}  // namespace qtrain::rpc
