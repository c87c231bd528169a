#include "server/rpc/sensitivity_stream.h"

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "server/engine/sensitivity.h"
#include "server/rpc/session_convert.h"
#include "server/rpc/step_stream.h"

namespace qtrain::rpc {
namespace {

using internal::RunContext;
template <typename Response>
using Reply = std::function<void(absl::StatusOr<Response>)>;

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

struct SensitivityPolicy {
  using Request = v1::SensitivityRequest;
  using Response = v1::SensitivityResponse;
  using Reactor = grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>;
  using Work = ops::SensitivityJob::Input;
  struct State {  // the operations' completions only
    std::shared_ptr<ops::SensitivityJob> job;
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

  static void Init(State& state, const RunContext& c) {
    state.job = std::make_shared<ops::SensitivityJob>(c.budget);
  }
  static absl::Status Start(ops::SessionHandle& h, std::shared_ptr<const Work> w, State& state,
                            const RunContext&, Reply<Response> done) {
    return h.SensitivityInput(
        state.job, std::move(w),
        [done = std::move(done)](absl::StatusOr<std::string> received) {
          if (!received.ok()) return done(received.status());
          Response resp;
          resp.set_evaluated(*received);
          done(std::move(resp));
        },
        ops::Admission::kWindowed);
  }

  // Each call runs the next evaluation; the one after the last answers the report.
  static absl::Status Final(ops::SessionHandle& h, State& state, const RunContext& c,
                            Reply<Response> done) {
    return h.SensitivityNext(
        state.job,
        [&state, &c, done = std::move(done)](absl::StatusOr<ops::SensitivityProgress> p) {
          if (!p.ok()) return done(p.status());
          Response resp;
          if (p->report) {
            *resp.mutable_report() = ReportToWire(*p->report);
            state.reported = true;
          } else {
            if (c.metrics != nullptr) {
              c.metrics->RecordStep("evaluate", p->seconds, p->metrics->examples);
            }
            resp.set_evaluated(p->evaluated);
            ToWire(*p->metrics, resp.mutable_metrics());
          }
          resp.set_evaluations(p->evaluations);
          resp.set_planned(p->planned);
          done(std::move(resp));
        },
        ops::Admission::kWindowed);
  }
  static bool FinalAgain(const State& state) { return !state.reported; }
  static absl::Status Empty() {
    return absl::InvalidArgumentError("AnalyzeSensitivity received no messages: nothing to do");
  }
};

}  // namespace

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewSensitivityReactor(
    CallGate gate, ops::SessionOps* sessions, ServiceLimits limits, Metrics* metrics) {
  return new internal::StepStream<SensitivityPolicy>(std::move(gate), sessions, limits, metrics,
                                                     nullptr);
}

}  // namespace qtrain::rpc
