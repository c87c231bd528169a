// qtrain::client::Client — a small C++ client of qtrain-server over the generated stubs.
// Errors come back as absl::Status with the server's code and message.
//
// Thread-safety: a Client may be shared by threads (gRPC stubs are thread-safe); each call blocks
// until its RPC completes. Streaming calls pull batches from a callback on a writer thread while
// results arrive on the calling thread, so the server's flow control paces the client.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <grpcpp/security/credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "qtrain/v1/trainer_service.grpc.pb.h"

namespace qtrain::client {

// The metadata header every call that names a session carries, with the session id: a
// consistent-hash proxy in front of several servers routes on it (deploy/nginx, docs/scaling.md).
inline constexpr char kSessionHeader[] = "qtrain-session";

// The server's status as an absl::Status (same code, same message).
absl::Status FromGrpc(const grpc::Status& status);

// How to reach a server over TLS: PEM contents (not paths). `ca` empty: the system's roots.
// `cert` and `key` (both or neither): the client certificate a mutual-TLS server asks for.
// `token`: a bearer token of the server's access file (--auth_tokens), sent with every call as
// "authorization: Bearer <token>" (never over plaintext).
struct TlsOptions {
  std::string ca;
  std::string cert;
  std::string key;
  std::string token;
};

class Client {
 public:
  // An insecure channel to `address` ("127.0.0.1:50051"). Connection errors surface per call.
  static std::unique_ptr<Client> Connect(const std::string& address);
  // A TLS channel to `address`; the server's certificate must name the address's host.
  static std::unique_ptr<Client> ConnectTls(const std::string& address, const TlsOptions& tls);

  // grpc.health.v1 Check of `service` ("" = the whole server): "SERVING", "NOT_SERVING", ...
  // Unavailable / DeadlineExceeded when the server cannot be reached within `timeout`.
  absl::StatusOr<std::string> Health(const std::string& service, absl::Duration timeout);

  // The server's CPU, ISA level and chosen int8 kernels.
  // `route_as` non-empty: the call carries that session's routing header, so that behind a
  // routing proxy the answer (its `replica`) comes from the replica hosting the session.
  absl::StatusOr<v1::ServerInfo> GetServerInfo(const std::string& route_as = "");

  absl::StatusOr<v1::Session> CreateSession(const v1::CreateSessionRequest& request);
  absl::StatusOr<v1::Session> GetSession(const std::string& id);
  absl::StatusOr<v1::ListSessionsResponse> ListSessions();
  absl::Status DeleteSession(const std::string& id);
  absl::StatusOr<v1::Session> UpdateRules(const std::string& id, const v1::RuleSet& rules);

  // Train and Calibrate keep at most `n` batches written ahead of their results (default 8): enough
  // to keep the server busy, few enough that progress is real and that a `next` which stops is
  // heeded within `n` batches. Not thread-safe against calls in progress.
  void set_max_in_flight(int n) { max_in_flight_ = n; }

  // Trains on the batches `next` fills (it returns false when there are no more), calling
  // `on_step` for every result, in order. Returns the stream's final status.
  absl::Status Train(const std::string& id, const std::function<bool(v1::Batch*)>& next,
                     const std::function<void(const v1::TrainResponse&)>& on_step);
  absl::StatusOr<v1::EvaluateResponse> Evaluate(const std::string& id,
                                                const std::function<bool(v1::Batch*)>& next,
                                                bool update_stats = false);
  // Standalone calibration over the inputs `next` fills; `on_progress` sees each batch's
  // progress. Returns the statistics the server sends last.
  absl::StatusOr<v1::QuantStats> Calibrate(
      const std::string& id, const std::function<bool(v1::Tensor*)>& next,
      const std::function<void(const v1::CalibrateResponse&)>& on_progress = nullptr);
  // Sensitivity analysis over the held-out batches `next` fills (with targets), under `options`
  // (unset rules: the session's); `on_progress` sees each message before the report (batches
  // received, then one per evaluation). The session does not change.
  absl::StatusOr<v1::SensitivityReport> AnalyzeSensitivity(
      const std::string& id, const v1::SensitivityOptions& options,
      const std::function<bool(v1::Batch*)>& next,
      const std::function<void(const v1::SensitivityResponse&)>& on_progress = nullptr);
  absl::StatusOr<v1::QuantStats> GetQuantStats(const std::string& id);
  absl::StatusOr<v1::Tensor> Forward(const std::string& id, const v1::Tensor& inputs);

  absl::StatusOr<v1::CheckpointInfo> SaveCheckpoint(const std::string& id);
  // Writes the session's checkpoint (safetensors) to `path` (through a temporary file renamed
  // on success, so a failed download never leaves a partial file); returns its size in bytes.
  absl::StatusOr<int64_t> DownloadCheckpoint(const std::string& id, const std::string& path);
  // Writes the session quantized for deployment (ExportQuantized: one safetensors file, its
  // quantization_config in the metadata) to `path`, like DownloadCheckpoint; returns its size.
  absl::StatusOr<int64_t> ExportQuantized(const v1::ExportRequest& request,
                                          const std::string& path);
  // Sends the safetensors file at `path` into session `id` (created from the file when new).
  absl::StatusOr<v1::CheckpointInfo> UploadCheckpoint(const std::string& id,
                                                      const std::string& path);
  // A new session from `first` (session_id, model, rules, optimizer, seed, module_map) and the
  // float weights of a model trained elsewhere: the safetensors file at `path` (PyTorch naming
  // and layouts), streamed in chunks. The server names every tensor that does not fit.
  absl::StatusOr<v1::Session> ImportWeights(v1::ImportRequest first, const std::string& path);
  // A new session from a Hugging Face model directory: `dir`/config.json (Llama, Qwen2,
  // Mistral, GPT-2, BERT; expanded by the server, which refuses a field it does not implement by
  // name) and its weights, as ImportHfWeights sends them. `first` as ImportWeights' (its model /
  // architecture are replaced); `seq_len` 0: the server's default. NotFound without config.json.
  absl::StatusOr<v1::Session> ImportHf(v1::ImportRequest first, const std::string& dir,
                                       int64_t seq_len = 0);
  // ImportWeights from a Hugging Face directory's weights: `dir`/model.safetensors, or the shards
  // model.safetensors.index.json lists, streamed as one file (no merged copy is written).
  // `first` as ImportWeights'. NotFound for a missing file; InvalidArgument for a malformed index
  // or shard header, or a tensor in two shards.
  absl::StatusOr<v1::Session> ImportHfWeights(v1::ImportRequest first, const std::string& dir);

 private:
  explicit Client(std::shared_ptr<grpc::Channel> channel);
  static std::unique_ptr<Client> Open(const std::string& address,
                                      std::shared_ptr<grpc::ChannelCredentials> credentials);
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Trainer::Stub> stub_;
  int max_in_flight_ = 8;
};

}  // namespace qtrain::client
