// qtrain-demo: the README's tour against a running qtrain-server. Trains a Fashion-MNIST MLP in
// float, fine-tunes it with int8 QAT and int8 QT from the float weights (rules switched between
// steps), calibrates static activation scales, prints the statistics, downloads the checkpoint,
// and ends with a table of accuracy and steps/s per mode.
//
//   qtrain-demo [--server=HOST:PORT (default $QTRAIN_SERVER, else 127.0.0.1:50051)] [--epochs=1]
//   [--train_examples=60000]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

#include <google/protobuf/util/json_util.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "client/data/dataset.h"
#include "qtrain/client.h"

ABSL_FLAG(std::string, server, "",
          "qtrain-server address (default: $QTRAIN_SERVER, else 127.0.0.1:50051)");
ABSL_FLAG(int, epochs, 1, "float pre-training epochs (fine-tunes run one epoch each)");
ABSL_FLAG(int64_t, train_examples, 60000, "Fashion-MNIST training examples to use");
ABSL_FLAG(std::string, data, "/usr/share/datasets/fashion-mnist",
          "Fashion-MNIST IDX directory (Debian's dataset-fashion-mnist)");
ABSL_FLAG(std::string, checkpoint, "qtrain-demo.safetensors", "where to save the download");

namespace {

using qtrain::client::BatchIterator;
using qtrain::client::Dataset;
namespace v1 = qtrain::v1;

constexpr int64_t kBatch = 128;

template <typename M>
M Json(const std::string& s) {
  M m;
  if (!google::protobuf::util::JsonStringToMessage(s, &m).ok()) {
    std::fprintf(stderr, "bad JSON: %s\n", s.c_str());
    std::exit(2);
  }
  return m;
}

struct Mode {
  double accuracy = 0;
  double steps_per_s = 0;
};

// The tour's steps over qtrain::client::Client, with Fashion-MNIST batches.
class Demo {
 public:
  Demo(qtrain::client::Client* client, const Dataset& train, const Dataset& test)
      : client_(client), train_(train), test_(test) {}

  void CreateSession(const std::string& id) {
    v1::CreateSessionRequest req;
    req.set_session_id(id);
    *req.mutable_model() = Json<v1::ModelSpec>(R"({"input": {"shape": [28, 28, 1]},
        "body": {"sequential": {"layers": [{"flatten": {}},
          {"linear": {"features": 256}}, {"activation": {"kind": "RELU"}},
          {"name": "head", "linear": {"features": 10}}]}}})");
    *req.mutable_optimizer() =
        Json<v1::OptimizerConfig>(R"({"adamw": {}, "schedule": {"learning_rate": 1e-3}})");
    req.set_seed(1);
    const v1::Session s = Check(client_->CreateSession(req), "CreateSession");
    std::printf("session %s: %lld parameters, ops:", s.session_id().c_str(),
                static_cast<long long>(s.parameters()));
    for (const auto& op : s.ops()) {
      std::printf(" %s:%s", op.module_path().c_str(), op.op_id().c_str());
    }
    std::printf("\n");
  }

  void SetRules(const std::string& id, const std::string& rules) {
    Check(client_->UpdateRules(id, Json<v1::RuleSet>(rules)), "UpdateRules");
  }

  // Streams `epochs` epochs of batches (pipelined) and returns steps/s.
  double Train(const std::string& id, int epochs, const char* label) {
    // Full batches only, in order, so every step costs the same.
    const int64_t steps = epochs * (train_.size() / kBatch);
    BatchIterator batches(train_, kBatch, epochs, /*shuffle=*/false, 0, steps);
    int64_t done = 0;
    double loss = 0;
    const auto start = std::chrono::steady_clock::now();
    Check(client_->Train(
              id, [&](v1::Batch* b) { return batches.NextBatch(b); },
              [&](const v1::TrainResponse& r) {
                ++done;
                loss = 0.95 * loss + 0.05 * r.loss();
                if (done % 100 == 0 || done == steps) {
                  std::printf("  %-9s step %6lld  loss %.4f  acc %.3f  durable %lld\n", label,
                              static_cast<long long>(r.step()), done < 20 ? r.loss() : loss,
                              r.accuracy(), static_cast<long long>(r.last_durable_step()));
                }
              }),
          "Train");
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return static_cast<double>(done) / secs;
  }

  double Evaluate(const std::string& id) {
    BatchIterator batches(test_, 500, 1, /*shuffle=*/false, 0);
    const v1::EvaluateResponse r = Check(
        client_->Evaluate(id, [&](v1::Batch* b) { return batches.NextBatch(b); }), "Evaluate");
    return r.accuracy();
  }

  v1::QuantStats Calibrate(const std::string& id, int batches) {
    BatchIterator inputs(train_, kBatch, 1, /*shuffle=*/false, 0, batches);
    return Check(client_->Calibrate(id, [&](v1::Tensor* t) { return inputs.NextInputs(t); }),
                 "Calibrate");
  }

  int64_t Download(const std::string& id, const std::string& path) {
    return Check(client_->DownloadCheckpoint(id, path), "DownloadCheckpoint");
  }

  void Delete(const std::string& id) { Check(client_->DeleteSession(id), "DeleteSession"); }

 private:
  template <typename T>
  static T Check(absl::StatusOr<T> r, const char* what) {
    if (!r.ok()) {
      std::fprintf(stderr, "qtrain-demo: %s failed: %s\n", what, r.status().ToString().c_str());
      std::exit(1);
    }
    return std::move(*r);
  }
  static void Check(const absl::Status& s, const char* what) {
    if (!s.ok()) {
      std::fprintf(stderr, "qtrain-demo: %s failed: %s\n", what, s.ToString().c_str());
      std::exit(1);
    }
  }

  qtrain::client::Client* client_;
  const Dataset& train_;
  const Dataset& test_;
};

float FirstFloat(const v1::Tensor& t) {
  float v = 0;
  if (t.data().size() >= sizeof(float)) std::memcpy(&v, t.data().data(), sizeof(float));
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  qtrain::client::DataOptions options;
  options.path = absl::GetFlag(FLAGS_data);
  options.limit = absl::GetFlag(FLAGS_train_examples);
  auto train = qtrain::client::LoadDataset(options);
  options.split = "t10k";
  options.limit = 0;
  auto test = qtrain::client::LoadDataset(options);
  if (!train.ok() || !test.ok()) {
    std::fprintf(stderr, "qtrain-demo: %s (apt-get install dataset-fashion-mnist)\n",
                 (train.ok() ? test.status() : train.status()).ToString().c_str());
    return 2;
  }
  std::string server = absl::GetFlag(FLAGS_server);
  if (server.empty()) {
    const char* env = std::getenv("QTRAIN_SERVER");
    server = env != nullptr && *env ? env : "127.0.0.1:50051";
  }
  std::unique_ptr<qtrain::client::Client> client = qtrain::client::Client::Connect(server);
  Demo demo(client.get(), *train, *test);
  const std::string id = absl::StrCat("demo-", std::time(nullptr));
  demo.CreateSession(id);

  Mode fp, qat, qt;
  std::printf("1. float pre-training\n");
  fp.steps_per_s = demo.Train(id, absl::GetFlag(FLAGS_epochs), "float");
  fp.accuracy = demo.Evaluate(id);
  std::printf("2. int8 QAT fine-tune (rules switched between steps)\n");
  demo.SetRules(id, R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})");
  qat.steps_per_s = demo.Train(id, 1, "QAT int8");
  qat.accuracy = demo.Evaluate(id);
  std::printf("3. int8 QT fine-tune (integer backward too)\n");
  demo.SetRules(id, R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
                                    "bwd_qtype": "int8"}]})");
  qt.steps_per_s = demo.Train(id, 1, "QT int8");
  qt.accuracy = demo.Evaluate(id);

  const int calibration_batches = static_cast<int>(std::min<int64_t>(20, train->size() / kBatch));
  std::printf("4. calibration of static activation scales (SRQ), %d batches\n",
              calibration_batches);
  demo.SetRules(id, R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8",
                                    "act_static_scale": true}]})");
  const v1::QuantStats stats = demo.Calibrate(id, calibration_batches);
  const int64_t bytes = demo.Download(id, absl::GetFlag(FLAGS_checkpoint));
  demo.Delete(id);  // the tour leaves no session behind

  std::printf("\n| mode | test accuracy | train steps/s (batch %lld) |\n|---|---|---|\n",
              static_cast<long long>(kBatch));
  std::printf("| float | %.4f | %.1f |\n", fp.accuracy, fp.steps_per_s);
  std::printf("| QAT int8 | %.4f | %.1f |\n", qat.accuracy, qat.steps_per_s);
  std::printf("| QT int8 | %.4f | %.1f |\n", qt.accuracy, qt.steps_per_s);
  std::printf("\n| module | stat | count | scale (first) | qtype |\n|---|---|---|---|---|\n");
  for (const auto& s : stats.stats()) {
    std::printf("| %s | %s | %lld | %.6g | %s |\n", s.module_path().c_str(), s.name().c_str(),
                static_cast<long long>(s.count()), FirstFloat(s.scale()), s.qtype().c_str());
  }
  std::printf("\ncheckpoint: %s (%lld bytes, safetensors)\n",
              absl::GetFlag(FLAGS_checkpoint).c_str(), static_cast<long long>(bytes));
  return 0;
}
