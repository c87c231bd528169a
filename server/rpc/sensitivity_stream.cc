#include "server/rpc/sensitivity_stream.h"

#include <chrono>
#include <optional>
#include <vector>

#include "server/engine/loss.h"
#include "server/engine/sensitivity.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/step_stream.h"

namespace qtrain::rpc {
namespace {

using engine::Trainer;
using internal::RunContext;

void ToWire(const engine::EvalMetrics& m, v1::SensitivityMetrics* out) {
  out->set_loss(m.loss);
  out->set_accuracy(m.accuracy);
  out->set_examples(m.examples);
}

v1::SensitivityReport ReportToWire(const engine::SensitivityReport& r) {
  v1::SensitivityReport out;
  ToWire(r.float_model, out.mutable_float_model());
  ToWire(r.quantized, out.mutable_quantized());
  for (const engine::UnitSensitivity& u : r.units) {
    v1::OpSensitivity* op = out.add_ops();
    op->set_module_path(u.module_path);
    op->set_op_name(u.op_name);
    op->set_rule_index(u.rule_index);
    op->set_qtype(u.qtype);
    op->set_uncalibrated(u.uncalibrated);
    if (u.only) ToWire(*u.only, op->mutable_only_this());
    if (u.all_but) ToWire(*u.all_but, op->mutable_all_but_this());
  }
  if (r.mixed_precision) {
    v1::MixedPrecision* mp = out.mutable_mixed_precision();
    *mp->mutable_rules() = r.mixed_precision->rules;
    ToWire(r.mixed_precision->metrics, mp->mutable_metrics());
    mp->set_within_budget(r.mixed_precision->within_budget);
    for (const engine::UnitChoice& c : r.mixed_precision->choices) {
      v1::OpChoice* choice = mp->add_choices();
      choice->set_module_path(c.module_path);
      choice->set_op_name(c.op_name);
      choice->set_qtype(c.qtype);
    }
  }
  return out;
}

constexpr int64_t kPerBatchOverhead = 4096;

struct SensitivityPolicy {
  using Request = v1::SensitivityRequest;
  using Response = v1::SensitivityResponse;
  using Reactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;
  struct Work {
    std::optional<engine::SensitivityOptions> options;
    bool session_rules = false;  // options without rules: the session's
    std::optional<engine::Batch> batch;
  };
  struct State {  // executor only
    std::optional<engine::SensitivityOptions> options;
    bool session_rules = true;
    std::vector<engine::Batch> batches;
    int64_t bytes = 0;
    engine::MemoryBudget::Lease lease;
    std::optional<engine::SensitivityAnalysis> analysis;
    uint64_t generation = 0;  // the trainer's when the analysis began
    bool reported = false;
  };
  static constexpr char kName[] = "AnalyzeSensitivity";
  static constexpr bool kStreamsResults = true;  // a message per batch received, then progress
  static constexpr bool kHasFinal = true;

  static bool HasWork(const Request& r) { return r.has_options() || r.has_batch(); }
  static const char* Escalates(const Request&) { return nullptr; }

  // Options are checked here, on the gRPC thread, so that a bad one fails the stream at once.
  // `message`: the request's position in the stream, from 1; only the first may carry options.
  static absl::StatusOr<Work> Parse(const Request& r, const ServiceLimits& l, int64_t message) {
    Work w;
    if (r.has_options() && message > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "options: only the first message may set them (message ", message, " does)"));
    }
    if (r.has_options()) {
      const v1::SensitivityOptions& o = r.options();
      engine::SensitivityOptions options;
      options.rules = o.rules();
      options.one_at_a_time = !o.skip_one_at_a_time();
      options.all_but_one = !o.skip_all_but_one();
      options.qtypes.assign(o.qtypes().begin(), o.qtypes().end());
      options.max_accuracy_drop = o.max_accuracy_drop();
      options.max_loss_increase = o.max_loss_increase();
      absl::Status s = engine::SensitivityAnalysis::Validate(options);
      if (!s.ok()) return absl::Status(s.code(), absl::StrCat("options.", s.message()));
      w.options = std::move(options);
      w.session_rules = !o.has_rules();
    }
    if (r.has_batch()) {
      absl::StatusOr<engine::Batch> batch = BatchFromWire(r.batch(), l.max_batch_bytes);
      if (!batch.ok()) return batch.status();
      w.batch = *std::move(batch);
    }
    return w;
  }

  static absl::StatusOr<Response> Run(Trainer& t, const Work& w, State& state,
                                      const RunContext& c) {
    if (w.options) {
      if (state.options || !state.batches.empty()) {
        return absl::InvalidArgumentError("options: only the first message may set them");
      }
      if (w.options->max_accuracy_drop > 0 &&
          t.model().spec().loss().kind() != v1::Loss::SOFTMAX_CROSS_ENTROPY) {
        return absl::InvalidArgumentError(
            "options.max_accuracy_drop: the model's loss (MSE) has no accuracy; use "
            "max_loss_increase");
      }
      state.options = w.options;
      state.session_rules = w.session_rules;
    }
    Response resp;
    if (!w.batch) {
      resp.set_evaluated("options received");
      return resp;
    }
    const engine::Batch& b = *w.batch;
    const std::string which = absl::StrCat("held-out batch ", state.batches.size());
    // In order: the targets' check reads the inputs' batch axis, which the first one proves.
    if (absl::Status s = t.model().ValidateInputs(b.inputs); !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(which, ": ", s.message()));
    }
    if (absl::Status s = engine::ValidateTargets(t.model().spec().loss(), t.model().output_shape(),
                                                 b.inputs.dim(0), b.targets);
        !s.ok()) {
      return absl::Status(s.code(), absl::StrCat(which, ": ", s.message()));
    }
    // Each batch also costs its bookkeeping: many tiny batches must not slip under the cap.
    const int64_t bytes =
        static_cast<int64_t>(b.inputs.nbytes() + b.targets.nbytes()) + kPerBatchOverhead;
    if (state.bytes + bytes > kMaxHeldOutBytes) {
      return absl::ResourceExhaustedError(absl::StrCat(
          which, ": the held-out batches exceed ", engine::HumanBytes(kMaxHeldOutBytes),
          "; every evaluation runs over all of them: send a smaller sample"));
    }
    if (state.batches.empty()) {
      QTRAIN_ASSIGN_OR_RETURN(state.lease,
                              engine::MemoryBudget::Reserve(c.budget, 0, "held-out batches"));
    }
    QTRAIN_RETURN_IF_ERROR(state.lease.Grow(bytes, absl::StrCat("holding ", which)));
    state.bytes += bytes;
    state.batches.push_back(b);
    resp.set_evaluated(absl::StrCat("received ", which, " (", b.inputs.dim(0), " examples)"));
    return resp;
  }

  // Each call runs the next evaluation; the one after the last answers the report.
  static absl::StatusOr<Response> Final(Trainer& t, const RunContext& c, State& state) {
    if (!state.analysis) {
      if (state.batches.empty()) {
        return absl::InvalidArgumentError(
            "AnalyzeSensitivity received no held-out batches: nothing to evaluate");
      }
      engine::SensitivityOptions options = state.options.value_or(engine::SensitivityOptions());
      if (state.session_rules) {
        options.rules = t.model().rules() != nullptr ? t.model().rules()->source() : v1::RuleSet();
      }
      absl::StatusOr<engine::SensitivityAnalysis> a =
          engine::SensitivityAnalysis::Create(t, std::move(options));
      if (!a.ok()) return a.status();
      state.analysis = *std::move(a);
      state.generation = t.generation();
    }
    // Other calls run between the evaluations: a step that moved the weights or statistics
    // would mix two models in one report.
    if (t.generation() != state.generation) {
      return absl::FailedPreconditionError(
          "the session's weights or quant stats changed during the analysis (a Train, Calibrate "
          "or upload ran beside it); run it again when nothing else changes the session");
    }
    engine::SensitivityAnalysis& a = *state.analysis;
    Response resp;
    std::optional<engine::Evaluation> next = a.Next();
    if (!next) {
      *resp.mutable_report() = ReportToWire(a.Report());
      state.reported = true;
      state.batches.clear();
      state.lease.Release();
    } else {
      const auto start = std::chrono::steady_clock::now();
      absl::StatusOr<engine::EvalMetrics> m = t.EvaluateUnder(next->rules, state.batches);
      if (!m.ok()) {
        return absl::Status(m.status().code(),
                            absl::StrCat(next->label, ": ", m.status().message()));
      }
      if (c.metrics != nullptr) c.metrics->RecordStep("evaluate", SecondsSince(start), m->examples);
      a.Record(*m);
      resp.set_evaluated(next->label);
      ToWire(*m, resp.mutable_metrics());
    }
    resp.set_evaluations(a.done());
    resp.set_planned(a.planned());
    return resp;
  }
  static bool FinalAgain(const State& state) { return !state.reported; }
  static absl::Status Empty() {
    return absl::InvalidArgumentError("AnalyzeSensitivity received no messages: nothing to do");
  }
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewSensitivityReactor(
    CallGate gate, engine::SessionManager* sessions, ServiceLimits limits, Metrics* metrics) {
  return new internal::StepStream<SensitivityPolicy>(std::move(gate), sessions, limits, nullptr,
                                                     metrics, nullptr);
}

}  // namespace qtrain::rpc
