// train, eval, calibrate and forward: the commands that stream data from a local dataset.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <deque>
#include <numeric>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "client/cli/interrupt.h"
#include "client/cli/output.h"
#include "client/cli/stream_setup.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {
namespace {

// "1 step", "3 steps".
std::string Plural(int64_t n, const char* noun) {
  return absl::StrCat(n, " ", noun, n == 1 ? "" : "s");
}

Progress MakeProgress(const Invocation& inv, const char* label, int64_t total) {
  return Progress(label, total, Progress::ParseMode(absl::GetFlag(FLAGS_progress), inv.json),
                  absl::GetFlag(FLAGS_log_every));
}

// Mean of the last `kWindow` values: the loss and accuracy that the progress and summary show.
class Window {
 public:
  void Add(double v) {
    values_.push_back(v);
    if (values_.size() > kWindow) values_.pop_front();
  }
  double Mean() const {
    return values_.empty() ? -1
                           : std::accumulate(values_.begin(), values_.end(), 0.0) / values_.size();
  }
  size_t size() const { return values_.size(); }

 private:
  static constexpr size_t kWindow = 50;
  std::deque<double> values_;
};

}  // namespace

int Train(Invocation& inv) {
  InterruptGuard interrupt;  // from the start: loading the data can take a while
  StreamSetup setup = Setup(inv, "train", /*need_labels=*/true);
  if (setup.exit_code != kOk) return setup.exit_code;
  client::BatchIterator batches = StepBatches(setup, absl::GetFlag(FLAGS_epochs));
  Progress progress = MakeProgress(inv, "train", batches.total_batches());
  Window loss, accuracy;
  int64_t done = 0, first_step = -1, last_step = -1, durable = -1, examples = 0;
  absl::Status s = inv.client->Train(
      setup.session,
      [&](v1::Batch* b) { return !InterruptGuard::interrupted() && batches.NextBatch(b); },
      [&](const v1::TrainResponse& r) {
        ++done;
        if (first_step < 0) first_step = r.step();
        last_step = r.step();
        durable = r.last_durable_step();
        examples += r.examples();
        loss.Add(r.loss());
        if (r.accuracy() >= 0) accuracy.Add(r.accuracy());
        progress.Update(done, loss.Mean(), accuracy.Mean());
      });
  progress.Finish();
  const double secs = progress.seconds();
  if (s.ok() && done == 0 && InterruptGuard::interrupted()) {
    return InterruptGuard::BeforeAnyBatch(inv, "train");
  }
  if (!s.ok()) {
    return Fail(inv,
                done == 0 ? "train (no step ran)"
                          : absl::StrCat("train (after ", Plural(done, "step"),
                                         "; the session is at step ", last_step, ")"),
                WithTargetsHint(inv, setup.data, s));
  }
  const double rate = secs > 0 ? done / secs : 0;
  if (inv.json) {
    nlohmann::json j = {{"session_id", setup.session},
                        {"steps", done},
                        {"first_step", first_step},
                        {"last_step", last_step},
                        {"examples", examples},
                        {"seconds", secs},
                        {"steps_per_s", rate},
                        {"loss", loss.Mean()},
                        {"accuracy", accuracy.Mean()},
                        {"last_durable_step", durable},
                        {"interrupted", InterruptGuard::interrupted()}};
    std::printf("%s\n", j.dump().c_str());
    return InterruptGuard::ExitCode(inv);
  }
  std::printf("trained session %s: %s (%s) in %.1f s, %.1f steps/s\n", setup.session.c_str(),
              first_step == last_step ? absl::StrCat("step ", last_step).c_str()
                                      : absl::StrCat("steps ", first_step, "-", last_step).c_str(),
              Plural(examples, "example").c_str(), secs, rate);
  std::printf(
      "  loss %.4f%s over the last %s; %s\n", loss.Mean(),
      accuracy.size() > 0 ? absl::StrFormat(", accuracy %.4f", accuracy.Mean()).c_str() : "",
      Plural(static_cast<int64_t>(loss.size()), "step").c_str(),
      durable >= 0 ? absl::StrCat("last durable step ", durable).c_str()
                   : "no durable checkpoint yet");
  return InterruptGuard::ExitCode(inv);
}

int Eval(Invocation& inv) {
  InterruptGuard interrupt;  // from the start: loading the data can take a while
  StreamSetup setup = Setup(inv, "eval", /*need_labels=*/true);
  if (setup.exit_code != kOk) return setup.exit_code;
  client::BatchIterator batches(setup.data, absl::GetFlag(FLAGS_batch_size), 1, false, 0,
                                absl::GetFlag(FLAGS_steps));
  Progress progress = MakeProgress(inv, "eval", batches.total_batches());
  int64_t sent = 0;
  auto r = inv.client->Evaluate(
      setup.session,
      [&](v1::Batch* b) {
        if (InterruptGuard::interrupted() || !batches.NextBatch(b)) return false;
        progress.Update(++sent, -1, -1);  // batches handed to the stream
        return true;
      },
      absl::GetFlag(FLAGS_update_stats));
  progress.Finish();
  if (sent == 0 && InterruptGuard::interrupted()) {
    return InterruptGuard::BeforeAnyBatch(inv, "eval");
  }
  if (!r.ok()) return Fail(inv, "eval", WithTargetsHint(inv, setup.data, r.status()));
  if (inv.json) {
    PrintJson(*r);
    return InterruptGuard::ExitCode(inv);
  }
  std::printf("evaluated session %s at step %lld: %lld examples, loss %.4f", setup.session.c_str(),
              static_cast<long long>(r->step()), static_cast<long long>(r->examples()), r->loss());
  if (r->accuracy() >= 0) std::printf(", accuracy %.4f", r->accuracy());
  if (r->tokens() > 0) {
    std::printf(", perplexity %.3f over %lld tokens", r->perplexity(),
                static_cast<long long>(r->tokens()));
  }
  std::printf("\n");
  return InterruptGuard::ExitCode(inv);
}

int Calibrate(Invocation& inv) {
  InterruptGuard interrupt;  // from the start: loading the data can take a while
  StreamSetup setup = Setup(inv, "calibrate", /*need_labels=*/false);
  if (setup.exit_code != kOk) return setup.exit_code;
  client::BatchIterator batches = StepBatches(setup, 1);
  Progress progress = MakeProgress(inv, "calibrate", batches.total_batches());
  int64_t sent = 0;
  auto stats = inv.client->Calibrate(
      setup.session,
      [&](v1::Tensor* t) {
        if (InterruptGuard::interrupted() || !batches.NextInputs(t)) return false;
        ++sent;
        return true;
      },
      [&](const v1::CalibrateResponse& r) {
        progress.Update(r.batches(), -1, -1, absl::StrCat(r.examples(), " examples"));
      });
  progress.Finish();
  if (sent == 0 && InterruptGuard::interrupted()) {
    return InterruptGuard::BeforeAnyBatch(inv, "calibrate");
  }
  if (!stats.ok()) return Fail(inv, "calibrate", stats.status());
  if (inv.json) {
    PrintJson(*stats);
  } else {
    PrintQuantStats(*stats);
  }
  return InterruptGuard::ExitCode(inv);
}

int Forward(Invocation& inv) {
  StreamSetup setup = Setup(inv, "forward", /*need_labels=*/false);
  if (setup.exit_code != kOk) return setup.exit_code;
  const int64_t n =
      std::min(setup.data.size(), std::max<int64_t>(1, absl::GetFlag(FLAGS_batch_size)));
  std::vector<int64_t> rows(static_cast<size_t>(n));
  std::iota(rows.begin(), rows.end(), 0);
  v1::Tensor inputs;
  setup.data.FillInputs(rows, &inputs);
  auto out = inv.client->Forward(setup.session, inputs);
  if (!out.ok()) return Fail(inv, "forward", out.status());
  // Outputs are f32 (N, ..., classes): report the argmax over the last axis per position.
  const int64_t classes = out->shape_size() > 0 ? out->shape(out->shape_size() - 1) : 1;
  std::vector<float> values(out->data().size() / sizeof(float));
  std::memcpy(values.data(), out->data().data(), values.size() * sizeof(float));
  std::vector<int64_t> argmax;
  for (size_t i = 0; classes > 0 && i + classes <= values.size(); i += classes) {
    argmax.push_back(std::max_element(values.begin() + i, values.begin() + i + classes) -
                     (values.begin() + i));
  }
  int64_t correct = 0;
  const bool labelled = setup.data.labels.size() >= argmax.size() && !setup.data.labels.empty();
  for (size_t i = 0; labelled && i < argmax.size(); ++i)
    correct += argmax[i] == setup.data.labels[i];
  if (inv.json) {
    nlohmann::json j = {{"shape", std::vector<int64_t>(out->shape().begin(), out->shape().end())},
                        {"outputs", values}};
    if (classes > 1) j["argmax"] = argmax;
    if (labelled) j["accuracy"] = static_cast<double>(correct) / argmax.size();
    std::printf("%s\n", j.dump().c_str());
    return kOk;
  }
  if (classes == 1) {  // one output per example (regression): the values themselves
    const bool targets = setup.data.float_targets.size() >= values.size();
    std::printf("outputs (%s) of %lld examples:\n", absl::StrJoin(out->shape(), "x").c_str(),
                static_cast<long long>(n));
    for (size_t i = 0; i < std::min<size_t>(values.size(), 10); ++i) {
      std::printf(
          "  %zu: %.6g%s\n", i, values[i],
          targets ? absl::StrCat("  (target ", setup.data.float_targets[i], ")").c_str() : "");
    }
    if (values.size() > 10) std::printf("  ... %zu more\n", values.size() - 10);
    return kOk;
  }
  std::printf("outputs (%s) of %lld examples; argmax per row:\n",
              absl::StrJoin(out->shape(), "x").c_str(), static_cast<long long>(n));
  for (size_t i = 0; i < std::min<size_t>(argmax.size(), 10); ++i) {
    std::printf("  %zu: %lld%s\n", i, static_cast<long long>(argmax[i]),
                labelled ? absl::StrCat("  (label ", setup.data.labels[i], ")").c_str() : "");
  }
  if (argmax.size() > 10) std::printf("  ... %zu more\n", argmax.size() - 10);
  if (labelled) {
    std::printf("accuracy %.4f (%lld/%zu)\n", static_cast<double>(correct) / argmax.size(),
                static_cast<long long>(correct), argmax.size());
  }
  return kOk;
}

}  // namespace qtrain::cli
