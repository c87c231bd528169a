// What TLS and bearer-token authentication cost on the Train stream (issue: security): the real
// server in-process, an MLP 784-256-10 (and the engine benchmark's 784-1024-1024-10) at batch 128
// in int8 QAT and float, one Train stream of 64 batches per iteration, over plaintext, TLS, and
// TLS + a bearer token checked against an access file. Certificates are made by openssl at
// start. Reported: steps/s (items_per_second). Client and server share the machine's cores, so
// both ends' encryption counts: an upper bound of what a remote client costs the server.
//
//   build/bin/qtrain-bench-transport --benchmark_repetitions=5
#include <benchmark/benchmark.h>
#include <google/protobuf/util/json_util.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"
#include "server/rpc/access.h"
#include "server/rpc/tensor_convert.h"
#include "server/server_main.h"
#include "server/store/checkpoint_io.h"

namespace qtrain {
namespace {

constexpr char kMlp[] = R"({"input": {"shape": [784]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 256}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 10}}]}}})";
constexpr char kMlpLarge[] = R"({"input": {"shape": [784]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 1024}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 1024}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 10}}]}}})";
constexpr char kQat[] = R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8"}]})";
constexpr char kToken[] = "bench-token";
constexpr int kBatch = 128;
constexpr int kStepsPerStream = 64;

enum Transport { kPlaintext = 0, kTls = 1, kTlsToken = 2 };

template <typename M>
M Parse(const std::string& json) {
  M m;
  (void)google::protobuf::util::JsonStringToMessage(json, &m);
  return m;
}

// The files of the TLS servers, made once: a CA, a certificate for localhost, an access file.
struct Files {
  std::string dir;
  Files() {
    char tmpl[] = "/tmp/qtrain_bench_tls_XXXXXX";
    dir = mkdtemp(tmpl);
    const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    const std::string script = absl::StrCat(
        "cd ", dir, " && openssl req -x509 ", ec,
        " -keyout ca.key -out ca.pem -days 1 -subj /CN=ca && printf "
        "'subjectAltName=DNS:localhost\\n' > san.ext && openssl req ",
        ec, " -keyout server.key -out server.csr -subj /CN=localhost && openssl x509 -req -in ",
        "server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -out server.pem -extfile ",
        "san.ext");
    if (std::system((script + " > /dev/null 2>&1").c_str()) != 0) std::abort();
    std::ofstream(dir + "/access.json") << R"({"tokens": [{"sha256": ")" << rpc::Sha256Hex(kToken)
                                        << R"(", "tenant": "bench", "role": "trainer"}]})";
  }
  ~Files() { (void)std::system(("rm -rf " + dir).c_str()); }
};

Files& TheFiles() {
  static Files* files = new Files();
  return *files;
}

std::unique_ptr<server::RunningServer> StartServer(Transport transport) {
  server::ServerOptions o;
  o.listen = "127.0.0.1:0";
  if (transport != kPlaintext) {
    o.tls_cert = TheFiles().dir + "/server.pem";
    o.tls_key = TheFiles().dir + "/server.key";
  }
  if (transport == kTlsToken) {
    o.auth_tokens = TheFiles().dir + "/access.json";
    o.audit_log = "none";  // the benchmark measures the per-call check, not log I/O
  }
  auto s = server::RunningServer::Start(o);
  if (!s.ok()) std::abort();
  return std::move(*s);
}

std::shared_ptr<grpc::Channel> Channel(Transport transport, int port) {
  if (transport == kPlaintext) {
    return grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                               grpc::InsecureChannelCredentials());
  }
  grpc::SslCredentialsOptions ssl;
  absl::StatusOr<std::string> ca = store::ReadWholeFile(TheFiles().dir + "/ca.pem", 1 << 20);
  ssl.pem_root_certs = ca.ok() ? *ca : "";
  std::shared_ptr<grpc::ChannelCredentials> creds = grpc::SslCredentials(ssl);
  if (transport == kTlsToken) {
    creds = grpc::CompositeChannelCredentials(creds, grpc::AccessTokenCredentials(kToken));
  }
  return grpc::CreateChannel(absl::StrCat("localhost:", port), creds);
}

// One Train stream of kStepsPerStream batches per iteration; the stream is a new call each time,
// so the per-call authentication is included, as is TLS on every byte.
void BM_TrainStream(benchmark::State& state) {
  const auto transport = static_cast<Transport>(state.range(0));
  const bool qat = state.range(1) != 0;
  const bool large = state.range(2) != 0;
  const bool bytes = state.range(3) != 0;  // images as U8 with scale 1/255 (a quarter of F32)
  auto server = StartServer(transport);
  auto stub = v1::Trainer::NewStub(Channel(transport, server->port()));
  {
    v1::CreateSessionRequest req;
    req.set_session_id("mlp");
    *req.mutable_model() = Parse<v1::ModelSpec>(large ? kMlpLarge : kMlp);
    if (qat) *req.mutable_rules() = Parse<v1::RuleSet>(kQat);
    grpc::ClientContext ctx;
    v1::Session resp;
    if (!stub->CreateSession(&ctx, req, &resp).ok()) std::abort();
  }
  Tensor x = Tensor::Empty(DType::kF32, {kBatch, 784});
  Tensor y = Tensor::Empty(DType::kS32, {kBatch});
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(0.f, 1.f);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = u(rng);
  for (int i = 0; i < kBatch; ++i) y.data<int32_t>()[i] = i % 10;
  v1::TrainRequest request;
  request.set_session_id("mlp");
  *request.mutable_batch()->mutable_inputs() = rpc::ToWire(x);
  if (bytes) {
    Tensor pixels = Tensor::Empty(DType::kU8, {kBatch, 784});
    for (int64_t i = 0; i < x.numel(); ++i) {
      pixels.data<uint8_t>()[i] = static_cast<uint8_t>(x.data<float>()[i] * 255.0f);
    }
    *request.mutable_batch()->mutable_inputs() = rpc::ToWire(pixels);
    request.mutable_batch()->mutable_inputs()->add_scale(1 / 255.0f);
  }
  *request.mutable_batch()->mutable_targets() = rpc::ToWire(y);
  for (auto _ : state) {
    grpc::ClientContext ctx;
    auto stream = stub->Train(&ctx);
    std::thread writer([&] {
      for (int i = 0; i < kStepsPerStream; ++i) {
        if (!stream->Write(request)) break;
      }
      stream->WritesDone();
    });
    v1::TrainResponse resp;
    int64_t steps = 0;
    while (stream->Read(&resp)) ++steps;
    writer.join();
    if (!stream->Finish().ok() || steps != kStepsPerStream) std::abort();
  }
  state.SetItemsProcessed(state.iterations() * kStepsPerStream);
  server->Shutdown();
}

BENCHMARK(BM_TrainStream)
    ->ArgNames({"transport", "qat", "large", "u8"})
    ->ArgsProduct({{kPlaintext, kTls, kTlsToken}, {0, 1}, {0, 1}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace qtrain

BENCHMARK_MAIN();
