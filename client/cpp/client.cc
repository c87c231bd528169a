#include "qtrain/client.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "safetensors_shards.h"

namespace qtrain::client {
namespace {

constexpr size_t kChunkBytes = 1 << 20;
constexpr int kMaxMessageBytes = 256 << 20;

// Every call that names a session says so in this header as well, so that a consistent-hash
// proxy in front of several servers (deploy/nginx) sends it to the replica hosting the session.
void Route(grpc::ClientContext& ctx, const std::string& session_id) {
  if (!session_id.empty()) ctx.AddMetadata(kSessionHeader, session_id);
}

// Runs one unary call `call(ctx, response)` about `session` ("" for none) and returns the
// response or the server's status.
template <typename Response, typename Call>
absl::StatusOr<Response> Unary(const std::string& session, Call&& call) {
  grpc::ClientContext ctx;
  Route(ctx, session);
  Response out;
  absl::Status s = FromGrpc(call(&ctx, &out));
  if (!s.ok()) return s;
  return out;
}

// Bounds the batches a stream has written ahead of their results. Without it gRPC's buffers take
// a whole dataset of small batches at once: progress would count batches the server has not run,
// and a client that stops (Ctrl-C) would still have them all processed.
class InFlightWindow {
 public:
  explicit InFlightWindow(int limit) : limit_(std::max(1, limit)) {}
  // Blocks until one more batch may be written; false once the stream has ended.
  bool Acquire() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &InFlightWindow::HasRoom));
    if (closed_) return false;
    ++outstanding_;
    return true;
  }
  void Release() {
    absl::MutexLock lock(&mu_);
    --outstanding_;
  }
  void Close() {
    absl::MutexLock lock(&mu_);
    closed_ = true;
  }

 private:
  bool HasRoom() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return closed_ || outstanding_ < limit_;
  }
  const int limit_;
  absl::Mutex mu_;
  int outstanding_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

namespace {

// Drives a bidi stream: a writer thread sends `first` with the first payload `fill` provides and
// then one message per payload, at most `limit` ahead of the responses (`first` alone when there
// is none, so that the server still learns the session); `on_response` sees every response on
// the calling thread. Returns the stream's final status.
template <typename Req, typename Resp>
absl::Status DriveStream(grpc::ClientReaderWriter<Req, Resp>& stream, int limit, const Req& first,
                         const std::function<bool(Req*)>& fill,
                         const std::function<void(const Resp&)>& on_response) {
  InFlightWindow window(limit);
  std::thread writer([&] {
    Req req = first;
    bool sent = false;
    while (window.Acquire() && fill(&req)) {
      sent = true;
      if (!stream.Write(req)) break;  // the server ended the stream; Finish says why
      req.Clear();
    }
    if (!sent) stream.Write(first);
    stream.WritesDone();
  });
  Resp resp;
  while (stream.Read(&resp)) {
    window.Release();
    on_response(resp);
  }
  window.Close();
  writer.join();
  return FromGrpc(stream.Finish());
}

}  // namespace

Client::Client(std::shared_ptr<grpc::Channel> channel)
    : channel_(std::move(channel)), stub_(v1::Trainer::NewStub(channel_)) {}

std::unique_ptr<Client> Client::Open(const std::string& address,
                                     std::shared_ptr<grpc::ChannelCredentials> credentials) {
  // Outputs (e.g. a language model's logits) and stats can exceed gRPC's 4 MiB default.
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxMessageBytes);
  args.SetMaxSendMessageSize(kMaxMessageBytes);
  return std::unique_ptr<Client>(
      new Client(grpc::CreateCustomChannel(address, std::move(credentials), args)));
}

std::unique_ptr<Client> Client::Connect(const std::string& address) {
  return Open(address, grpc::InsecureChannelCredentials());
}

std::unique_ptr<Client> Client::ConnectTls(const std::string& address, const TlsOptions& tls) {
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = tls.ca;
  o.pem_cert_chain = tls.cert;
  o.pem_private_key = tls.key;
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::SslCredentials(o);
  if (!tls.token.empty()) {
    credentials =
        grpc::CompositeChannelCredentials(credentials, grpc::AccessTokenCredentials(tls.token));
  }
  return Open(address, credentials);
}

absl::StatusOr<std::string> Client::Health(const std::string& service, absl::Duration timeout) {
  auto health = grpc::health::v1::Health::NewStub(channel_);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  ctx.set_wait_for_ready(true);  // ride out a server that is still starting, up to the deadline
  grpc::health::v1::HealthCheckRequest req;
  req.set_service(service);
  grpc::health::v1::HealthCheckResponse resp;
  absl::Status s = FromGrpc(health->Check(&ctx, req, &resp));
  if (!s.ok()) return s;
  return grpc::health::v1::HealthCheckResponse::ServingStatus_Name(resp.status());
}

absl::StatusOr<v1::Session> Client::CreateSession(const v1::CreateSessionRequest& request) {
  return Unary<v1::Session>(request.session_id(), [&](grpc::ClientContext* c, v1::Session* r) {
    return stub_->CreateSession(c, request, r);
  });
}

absl::StatusOr<v1::Session> Client::GetSession(const std::string& id) {
  v1::GetSessionRequest req;
  req.set_session_id(id);
  return Unary<v1::Session>(
      id, [&](grpc::ClientContext* c, v1::Session* r) { return stub_->GetSession(c, req, r); });
}

absl::StatusOr<v1::ServerInfo> Client::GetServerInfo(const std::string& route_as) {
  return Unary<v1::ServerInfo>(route_as, [&](grpc::ClientContext* c, v1::ServerInfo* r) {
    return stub_->GetServerInfo(c, v1::GetServerInfoRequest(), r);
  });
}

absl::StatusOr<v1::ListSessionsResponse> Client::ListSessions() {
  return Unary<v1::ListSessionsResponse>(
      "", [&](grpc::ClientContext* c, v1::ListSessionsResponse* r) {
        return stub_->ListSessions(c, v1::ListSessionsRequest(), r);
      });
}

absl::Status Client::DeleteSession(const std::string& id) {
  v1::DeleteSessionRequest req;
  req.set_session_id(id);
  return Unary<v1::DeleteSessionResponse>(
             id, [&](grpc::ClientContext* c,
                     v1::DeleteSessionResponse* r) { return stub_->DeleteSession(c, req, r); })
      .status();
}

absl::StatusOr<v1::Session> Client::UpdateRules(const std::string& id, const v1::RuleSet& rules) {
  v1::UpdateRulesRequest req;
  req.set_session_id(id);
  *req.mutable_rules() = rules;
  return Unary<v1::Session>(
      id, [&](grpc::ClientContext* c, v1::Session* r) { return stub_->UpdateRules(c, req, r); });
}

absl::Status Client::Train(const std::string& id, const std::function<bool(v1::Batch*)>& next,
                           const std::function<void(const v1::TrainResponse&)>& on_step) {
  grpc::ClientContext ctx;
  Route(ctx, id);
  auto stream = stub_->Train(&ctx);
  v1::TrainRequest first;
  first.set_session_id(id);
  return DriveStream<v1::TrainRequest, v1::TrainResponse>(
      *stream, max_in_flight_, first, [&](v1::TrainRequest* r) { return next(r->mutable_batch()); },
      [&](const v1::TrainResponse& r) {
        if (on_step) on_step(r);
      });
}

absl::StatusOr<v1::EvaluateResponse> Client::Evaluate(const std::string& id,
                                                      const std::function<bool(v1::Batch*)>& next,
                                                      bool update_stats) {
  grpc::ClientContext ctx;
  Route(ctx, id);
  v1::EvaluateResponse out;
  auto writer = stub_->Evaluate(&ctx, &out);
  v1::EvaluateRequest req;
  req.set_session_id(id);
  req.set_update_stats(update_stats);
  while (next(req.mutable_batch())) {
    if (!writer->Write(req)) break;
    req.Clear();
    req.set_update_stats(update_stats);
  }
  if (!req.session_id().empty()) {  // no batch at all: still name the session
    req.clear_batch();
    writer->Write(req);
  }
  writer->WritesDone();
  absl::Status s = FromGrpc(writer->Finish());
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::QuantStats> Client::Calibrate(
    const std::string& id, const std::function<bool(v1::Tensor*)>& next,
    const std::function<void(const v1::CalibrateResponse&)>& on_progress) {
  grpc::ClientContext ctx;
  Route(ctx, id);
  auto stream = stub_->Calibrate(&ctx);
  v1::CalibrateRequest first;
  first.set_session_id(id);
  v1::QuantStats stats;
  absl::Status s = DriveStream<v1::CalibrateRequest, v1::CalibrateResponse>(
      *stream, max_in_flight_, first,
      [&](v1::CalibrateRequest* r) { return next(r->mutable_inputs()); },
      [&](const v1::CalibrateResponse& r) {
        if (r.has_stats()) {
          stats = r.stats();
        } else if (on_progress) {
          on_progress(r);
        }
      });
  if (!s.ok()) return s;
  return stats;
}

absl::StatusOr<v1::SensitivityReport> Client::AnalyzeSensitivity(
    const std::string& id, const v1::SensitivityOptions& options,
    const std::function<bool(v1::Batch*)>& next,
    const std::function<void(const v1::SensitivityResponse&)>& on_progress) {
  grpc::ClientContext ctx;
  Route(ctx, id);
  auto stream = stub_->AnalyzeSensitivity(&ctx);
  v1::SensitivityRequest first;
  first.set_session_id(id);
  *first.mutable_options() = options;
  v1::SensitivityReport report;
  absl::Status s = DriveStream<v1::SensitivityRequest, v1::SensitivityResponse>(
      *stream, max_in_flight_, first,
      [&](v1::SensitivityRequest* r) { return next(r->mutable_batch()); },
      [&](const v1::SensitivityResponse& r) {
        if (r.has_report()) {
          report = r.report();
        } else if (on_progress) {
          on_progress(r);
        }
      });
  if (!s.ok()) return s;
  return report;
}

absl::StatusOr<v1::QuantStats> Client::GetQuantStats(const std::string& id) {
  v1::GetQuantStatsRequest req;
  req.set_session_id(id);
  return Unary<v1::QuantStats>(id, [&](grpc::ClientContext* c, v1::QuantStats* r) {
    return stub_->GetQuantStats(c, req, r);
  });
}

absl::StatusOr<v1::Tensor> Client::Forward(const std::string& id, const v1::Tensor& inputs) {
  v1::ForwardRequest req;
  req.set_session_id(id);
  *req.mutable_inputs() = inputs;
  absl::StatusOr<v1::ForwardResponse> out = Unary<v1::ForwardResponse>(
      id,
      [&](grpc::ClientContext* c, v1::ForwardResponse* r) { return stub_->Forward(c, req, r); });
  if (!out.ok()) return out.status();
  return out->outputs();
}

absl::StatusOr<v1::CheckpointInfo> Client::SaveCheckpoint(const std::string& id) {
  v1::SaveCheckpointRequest req;
  req.set_session_id(id);
  return Unary<v1::CheckpointInfo>(id, [&](grpc::ClientContext* c, v1::CheckpointInfo* r) {
    return stub_->SaveCheckpoint(c, req, r);
  });
}

namespace {

// Writes a stream of CheckpointChunk into `path` through `path`.part, renamed on success.
template <typename Reader>
absl::StatusOr<int64_t> SaveStream(Reader& reader, const std::string& path) {
  const std::string tmp = absl::StrCat(path, ".part");
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) return absl::NotFoundError(absl::StrCat("cannot write ", tmp));
  v1::CheckpointChunk chunk;
  int64_t bytes = 0;
  while (reader->Read(&chunk)) {
    out.write(chunk.data().data(), static_cast<std::streamsize>(chunk.data().size()));
    bytes += static_cast<int64_t>(chunk.data().size());
  }
  absl::Status s = FromGrpc(reader->Finish());
  out.close();
  if (s.ok() && !out) s = absl::DataLossError(absl::StrCat("writing ", tmp, " failed"));
  if (s.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    s = absl::DataLossError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  if (!s.ok()) {
    std::remove(tmp.c_str());
    return s;
  }
  return bytes;
}

}  // namespace

absl::StatusOr<int64_t> Client::DownloadCheckpoint(const std::string& id, const std::string& path) {
  grpc::ClientContext ctx;
  Route(ctx, id);
  v1::DownloadCheckpointRequest req;
  req.set_session_id(id);
  auto reader = stub_->DownloadCheckpoint(&ctx, req);
  return SaveStream(reader, path);
}

absl::StatusOr<int64_t> Client::ExportQuantized(const v1::ExportRequest& request,
                                                const std::string& path) {
  grpc::ClientContext ctx;
  Route(ctx, request.session_id());
  auto reader = stub_->ExportQuantized(&ctx, request);
  return SaveStream(reader, path);
}

namespace {

// Streams the file at `path` through `writer` in chunks of `first`'s type: `first` (with its
// configuration) carries the first bytes, later messages only bytes. NotFound when the file
// cannot be read; the server's status otherwise.
template <typename Message, typename Writer>
absl::Status StreamFile(Message first, const std::string& path, Writer& writer) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read ", path));
  std::string buf(kChunkBytes, '\0');
  Message chunk = std::move(first);
  do {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    chunk.set_data(buf.data(), static_cast<size_t>(in.gcount()));
    if (!writer->Write(chunk)) break;
    chunk = Message();
  } while (in);
  writer->WritesDone();
  return absl::OkStatus();
}

// As StreamFile, for a sharded checkpoint: the merged header, then each shard's data region.
template <typename Message, typename Writer>
absl::Status StreamMerged(Message first, const MergedSafetensors& merged, Writer& writer) {
  Message chunk = std::move(first);
  chunk.set_data(merged.header);
  bool open = writer->Write(chunk);
  std::string buf(kChunkBytes, '\0');
  for (const MergedSafetensors::Piece& piece : merged.pieces) {
    std::ifstream in(piece.path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(piece.offset));
    for (uint64_t left = piece.length; open && left > 0;) {
      const uint64_t n = std::min<uint64_t>(left, buf.size());
      if (!in.read(buf.data(), static_cast<std::streamsize>(n))) {
        writer->WritesDone();
        return absl::DataLossError(absl::StrCat(piece.path, " ended early"));
      }
      chunk = Message();
      chunk.set_data(buf.data(), n);
      open = writer->Write(chunk);
      left -= n;
    }
  }
  writer->WritesDone();
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<v1::CheckpointInfo> Client::UploadCheckpoint(const std::string& id,
                                                            const std::string& path) {
  if (!std::ifstream(path, std::ios::binary)) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  grpc::ClientContext ctx;
  Route(ctx, id);
  v1::CheckpointInfo out;
  auto writer = stub_->UploadCheckpoint(&ctx, &out);
  v1::CheckpointChunk first;
  first.set_session_id(id);
  absl::Status sent = StreamFile(std::move(first), path, writer);
  absl::Status s = FromGrpc(writer->Finish());
  if (!sent.ok()) return sent;
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::Session> Client::ImportWeights(v1::ImportRequest first,
                                                  const std::string& path) {
  if (!std::ifstream(path, std::ios::binary)) {
    return absl::NotFoundError(absl::StrCat("cannot read ", path));
  }
  grpc::ClientContext ctx;
  Route(ctx, first.session_id());
  v1::Session out;
  auto writer = stub_->ImportWeights(&ctx, &out);
  absl::Status sent = StreamFile(std::move(first), path, writer);
  absl::Status s = FromGrpc(writer->Finish());
  if (!sent.ok()) return sent;
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::Session> Client::ImportHfWeights(v1::ImportRequest first,
                                                    const std::string& dir) {
  const std::string single = dir + "/model.safetensors";
  if (std::ifstream(single) || !std::ifstream(dir + "/model.safetensors.index.json")) {
    return ImportWeights(std::move(first), single);
  }
  absl::StatusOr<MergedSafetensors> merged = MergeShards(dir);
  if (!merged.ok()) return merged.status();
  grpc::ClientContext ctx;
  Route(ctx, first.session_id());
  v1::Session out;
  auto writer = stub_->ImportWeights(&ctx, &out);
  absl::Status sent = StreamMerged(std::move(first), *merged, writer);
  absl::Status s = FromGrpc(writer->Finish());
  if (!sent.ok()) return sent;
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<v1::Session> Client::ImportHf(v1::ImportRequest first, const std::string& dir,
                                             int64_t seq_len) {
  std::ifstream config(dir + "/config.json");
  if (!config) return absl::NotFoundError(absl::StrCat("cannot read ", dir, "/config.json"));
  std::stringstream text;
  text << config.rdbuf();
  first.clear_model();
  v1::Architecture* a = first.mutable_architecture();
  a->Clear();
  a->set_name("hf");
  a->set_hf_config(text.str());
  if (seq_len > 0) a->add_input_shape(seq_len);
  return ImportHfWeights(std::move(first), dir);
}

}  // namespace qtrain::client
