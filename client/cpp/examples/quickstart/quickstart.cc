// qtrain-quickstart: trains a small classifier on qtrain-server through the C++ client library,
// in float and then with int8 QAT, evaluates it, calibrates static activation scales, downloads
// the checkpoint and deletes the session. The data is synthetic (a linear teacher over 16
// features, 4 classes), so the program needs nothing but a server.
//
//   qtrain-quickstart [SERVER (default $QTRAIN_SERVER or 127.0.0.1:50051)] [CHECKPOINT_FILE]
#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "qtrain/client.h"

namespace {

namespace v1 = qtrain::v1;
constexpr int kFeatures = 16, kClasses = 4, kBatch = 64;

// The session this program created, deleted again when a later call fails.
qtrain::client::Client* g_client = nullptr;
std::string g_session;

// Fails the program with the call's status, e.g. "CreateSession: ALREADY_EXISTS: ...".
void Check(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  std::fprintf(stderr, "qtrain-quickstart: %s: %s\n", what, s.ToString().c_str());
  if (g_client != nullptr && !g_session.empty()) (void)g_client->DeleteSession(g_session);
  std::exit(1);
}
template <typename T>
T Check(absl::StatusOr<T> r, const char* what) {
  Check(r.status(), what);
  return *std::move(r);
}
template <typename M>
M Json(const char* json) {
  M m;
  Check(google::protobuf::util::JsonStringToMessage(json, &m).ok()
            ? absl::OkStatus()
            : absl::InternalError("bad JSON in the example"),
        json);
  return m;
}

// Synthetic batches: x uniform in [-1, 1]^16, label = argmax(teacher · x), with one fixed
// teacher; `seed` picks the stream of examples (training and held-out differ).
class Teacher {
 public:
  explicit Teacher(uint32_t seed) : rng_(7) {
    for (float& w : weights_) w = Uniform();
    rng_.seed(seed);
  }
  void Fill(v1::Batch* batch) {
    std::vector<float> x(kBatch * kFeatures);
    std::vector<int32_t> y(kBatch);
    for (int i = 0; i < kBatch; ++i) {
      for (int f = 0; f < kFeatures; ++f) x[i * kFeatures + f] = Uniform();
      float best = -1e30f;
      for (int c = 0; c < kClasses; ++c) {
        float logit = 0;
        for (int f = 0; f < kFeatures; ++f)
          logit += weights_[c * kFeatures + f] * x[i * kFeatures + f];
        if (logit > best) best = logit, y[i] = c;
      }
    }
    SetTensor(batch->mutable_inputs(), v1::Tensor::F32, {kBatch, kFeatures}, x.data(),
              x.size() * sizeof(float));
    SetTensor(batch->mutable_targets(), v1::Tensor::I32, {kBatch}, y.data(),
              y.size() * sizeof(int32_t));
  }

 private:
  static void SetTensor(v1::Tensor* t, v1::Tensor::DType dtype, std::vector<int64_t> shape,
                        const void* data, size_t bytes) {
    t->set_dtype(dtype);
    t->mutable_shape()->Assign(shape.begin(), shape.end());
    t->set_data(data, bytes);
  }
  float Uniform() { return std::uniform_real_distribution<float>(-1, 1)(rng_); }
  std::mt19937 rng_;
  float weights_[kClasses * kFeatures];
};

// Streams `steps` batches (the library keeps several in flight) and prints the last result.
void Train(qtrain::client::Client& client, const std::string& id, Teacher& data, int steps,
           const char* label) {
  int sent = 0;
  v1::TrainResponse last;
  Check(client.Train(
            id, [&](v1::Batch* b) { return sent++ < steps ? (data.Fill(b), true) : false; },
            [&](const v1::TrainResponse& r) { last = r; }),
        "Train");
  std::printf("%-9s step %4lld  loss %.4f  batch accuracy %.3f\n", label,
              static_cast<long long>(last.step()), last.loss(), last.accuracy());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h"))) {
    std::printf(
        "usage: %s [SERVER (default $QTRAIN_SERVER or 127.0.0.1:50051)] [CHECKPOINT_FILE]\n",
        argv[0]);
    return 0;
  }
  const char* env = std::getenv("QTRAIN_SERVER");
  const std::string server = argc > 1 ? argv[1] : env ? env : "127.0.0.1:50051";
  const std::string checkpoint = argc > 2 ? argv[2] : "quickstart.safetensors";
  auto client = qtrain::client::Client::Connect(server);
  std::printf("server %s: %s\n", server.c_str(),
              Check(client->Health("", absl::Seconds(5)), "Health").c_str());

  v1::CreateSessionRequest create;
  create.set_session_id("quickstart-" + std::to_string(getpid()));
  *create.mutable_model() = Json<v1::ModelSpec>(R"({"input": {"shape": [16]},
      "body": {"sequential": {"layers": [{"linear": {"features": 64}},
        {"activation": {"kind": "RELU"}}, {"name": "head", "linear": {"features": 4}}]}}})");
  *create.mutable_optimizer() =
      Json<v1::OptimizerConfig>(R"({"adamw": {}, "schedule": {"learning_rate": 3e-3}})");
  const std::string id = Check(client->CreateSession(create), "CreateSession").session_id();
  g_client = client.get();
  g_session = id;
  std::printf("session %s\n", id.c_str());

  Teacher train(1), test(2);
  Train(*client, id, train, 300, "float");
  // The same weights, now with int8 weights and activations in the forward pass.
  Check(client->UpdateRules(
            id, Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})")),
        "UpdateRules");
  Train(*client, id, train, 200, "QAT int8");

  int batches = 0;
  const v1::EvaluateResponse eval =
      Check(client->Evaluate(
                id, [&](v1::Batch* b) { return batches++ < 32 ? (test.Fill(b), true) : false; }),
            "Evaluate");
  std::printf("held-out accuracy %.4f over %lld examples\n", eval.accuracy(),
              static_cast<long long>(eval.examples()));

  // Static-range quantization: calibrate activation scales over 10 batches of inputs.
  Check(client->UpdateRules(id, Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int8",
                                 "act_qtype": "int8", "act_static_scale": true}]})")),
        "UpdateRules");
  batches = 0;
  const v1::QuantStats stats = Check(client->Calibrate(id,
                                                       [&](v1::Tensor* inputs) {
                                                         if (batches++ == 10) return false;
                                                         v1::Batch b;
                                                         train.Fill(&b);
                                                         *inputs = b.inputs();
                                                         return true;
                                                       }),
                                     "Calibrate");
  for (const v1::QuantStat& s : stats.stats()) {
    float scale = 0;
    if (s.scale().data().size() >= sizeof scale)
      std::memcpy(&scale, s.scale().data().data(), sizeof scale);
    std::printf("calibrated %s %s: count %lld, scale %.6g\n", s.module_path().c_str(),
                s.name().c_str(), static_cast<long long>(s.count()), scale);
  }

  const int64_t bytes = Check(client->DownloadCheckpoint(id, checkpoint), "DownloadCheckpoint");
  std::printf("checkpoint %s: %lld bytes\n", checkpoint.c_str(), static_cast<long long>(bytes));
  g_session.clear();
  Check(client->DeleteSession(id), "DeleteSession");
  return 0;
}
