#include "server/cluster/gloo_group.h"

#include <gloo/allreduce.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/file_store.h>
#include <gloo/rendezvous/prefix_store.h>
#include <gloo/rendezvous/redis_store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <cstring>
#include <exception>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kernels/status_macros.h"

namespace qtrain::cluster {
namespace {

constexpr char kFile[] = "file://";
constexpr char kRedis[] = "redis://";
// Point-to-point slots: a message's length, then its bytes (collectives use their own tags).
constexpr uint64_t kLengthSlot = 1;
constexpr uint64_t kBodySlot = 2;

struct RedisAddress {
  std::string host;
  int port = 6379;
};

absl::StatusOr<RedisAddress> ParseRedis(const std::string& spec) {
  const std::string rest = spec.substr(std::strlen(kRedis));
  std::vector<std::string> parts = absl::StrSplit(rest, absl::MaxSplits(':', 1));
  RedisAddress a;
  a.host = parts[0];
  if (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &a.port)) a.port = -1;
  if (a.host.empty() || a.port <= 0 || a.port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous \"", spec, "\": expected redis://HOST:PORT"));
  }
  return a;
}

absl::Status Failed(const std::string& what, const std::exception& e) {
  return absl::UnavailableError(absl::StrCat(what, ": ", e.what()));
}

}  // namespace

absl::Status ValidateRendezvous(const std::string& rendezvous) {
  if (absl::StartsWith(rendezvous, kFile)) {
    const std::string dir = rendezvous.substr(std::strlen(kFile));
    if (dir.empty() || dir[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat(
          "rendezvous \"", rendezvous, "\": expected file:///ABSOLUTE/DIR (a shared directory)"));
    }
    return absl::OkStatus();
  }
  if (absl::StartsWith(rendezvous, kRedis)) return ParseRedis(rendezvous).status();
  return absl::InvalidArgumentError(
      absl::StrCat("rendezvous \"", rendezvous, "\": expected file:///DIR or redis://HOST:PORT"));
}

absl::StatusOr<std::unique_ptr<GlooGroup>> GlooGroup::Connect(const GroupConfig& config) {
  if (absl::Status s = ValidateRendezvous(config.rendezvous); !s.ok()) return s;
  if (config.world_size < 1 || config.rank < 0 || config.rank >= config.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", config.rank, " of a world of ", config.world_size));
  }
  auto g = std::unique_ptr<GlooGroup>(new GlooGroup(config));
  try {
    if (absl::StartsWith(config.rendezvous, kFile)) {
      const std::string dir = config.rendezvous.substr(std::strlen(kFile));
      std::error_code ec;
      std::filesystem::create_directories(dir, ec);  // FileStore expects the directory
      g->store_ = std::make_unique<gloo::rendezvous::FileStore>(dir);
    } else {
      absl::StatusOr<RedisAddress> a = ParseRedis(config.rendezvous);
      g->store_ = std::make_unique<gloo::rendezvous::RedisStore>(a->host, a->port);
    }
    g->prefixed_ = std::make_unique<gloo::rendezvous::PrefixStore>(config.group_id, *g->store_);
    gloo::transport::tcp::attr attr(config.bind_host.c_str());
    auto device = gloo::transport::tcp::CreateDevice(attr);
    auto context = std::make_shared<gloo::rendezvous::Context>(config.rank, config.world_size);
    context->setTimeout(config.timeout);
    context->connectFullMesh(*g->prefixed_, device);
    g->context_ = std::move(context);
  } catch (const std::exception& e) {
    return Failed(
        absl::StrCat("joining data-parallel group ", config.group_id, " as rank ", config.rank,
                     " of ", config.world_size, " through ", config.rendezvous),
        e);
  }
  return g;
}

GlooGroup::GlooGroup(const GroupConfig& config)
    : rank_(config.rank), size_(config.world_size), timeout_(config.timeout) {}

GlooGroup::~GlooGroup() = default;

template <typename T>
absl::Status GlooGroup::AllReduce(T* data, size_t n, const char* what) {
  if (size_ == 1 || n == 0) return absl::OkStatus();
  try {
    gloo::AllreduceOptions opts(context_);
    opts.setOutput(data, n);
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<T>));
    opts.setTag(tag_++);
    opts.setTimeout(timeout_);
    gloo::allreduce(opts);
  } catch (const std::exception& e) {
    return Failed(absl::StrCat("all-reduce of ", n, " ", what, " across ", size_, " ranks"), e);
  }
  return absl::OkStatus();
}

absl::Status GlooGroup::AllReduceSum(absl::Span<Tensor* const> tensors, float weight) {
  int64_t total = 0;
  for (const Tensor* t : tensors) {
    if (t->dtype() != DType::kF32 || !t->device().is_host()) {
      return absl::InvalidArgumentError(absl::StrCat("all-reduce: expected f32 host tensors, got ",
                                                     DTypeName(t->dtype()), ShapeString(t->shape()),
                                                     " on ", t->device().Name()));
    }
    total += t->numel();
  }
  auto scale = [weight](float* data, int64_t n) {
    if (weight == 1.0f) return;
    for (int64_t i = 0; i < n; ++i) data[i] *= weight;
  };
  if (tensors.size() == 1) {  // in place: no copies
    float* data = tensors[0]->data<float>();
    scale(data, total);
    return AllReduce(data, static_cast<size_t>(total), "values");
  }
  packed_.resize(static_cast<size_t>(total));
  float* at = packed_.data();
  for (const Tensor* t : tensors) {
    std::memcpy(at, t->data<float>(), t->nbytes());
    at += t->numel();
  }
  scale(packed_.data(), total);
  QTRAIN_RETURN_IF_ERROR(AllReduce(packed_.data(), packed_.size(), "values"));
  at = packed_.data();
  for (Tensor* t : tensors) {
    std::memcpy(t->data<float>(), at, t->nbytes());
    at += t->numel();
  }
  return absl::OkStatus();
}

absl::Status GlooGroup::AllReduceSum(absl::Span<double> values) {
  return AllReduce(values.data(), values.size(), "counters");
}

absl::Status GlooGroup::Send(int rank, const std::string& bytes) {
  uint64_t length = bytes.size();
  try {
    auto head = context_->createUnboundBuffer(&length, sizeof(length));
    head->send(rank, kLengthSlot);
    std::string copy = bytes;  // Gloo's buffers are mutable
    auto body = context_->createUnboundBuffer(copy.data(), copy.size());
    if (!copy.empty()) body->send(rank, kBodySlot);
    head->waitSend(timeout_);
    if (!copy.empty()) body->waitSend(timeout_);
  } catch (const std::exception& e) {
    return Failed(absl::StrCat("sending ", bytes.size(), " bytes to rank ", rank), e);
  }
  return absl::OkStatus();
}

absl::Status GlooGroup::WaitRecv(gloo::transport::UnboundBuffer& buffer,
                                 std::chrono::milliseconds timeout) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (aborted_) return absl::UnavailableError("the group was closed");
    receiving_ = &buffer;
  }
  bool done = false;
  std::string error;
  try {
    done = buffer.waitRecv(timeout);
  } catch (const std::exception& e) {
    error = e.what();
  }
  std::lock_guard<std::mutex> lock(mu_);
  receiving_ = nullptr;
  if (!error.empty()) return absl::UnavailableError(error);
  if (!done || aborted_) return absl::UnavailableError("the group was closed");
  return absl::OkStatus();
}

absl::StatusOr<std::string> GlooGroup::Recv(int rank, std::chrono::milliseconds timeout,
                                            int64_t max_bytes) {
  uint64_t length = 0;
  std::string out;
  try {
    auto head = context_->createUnboundBuffer(&length, sizeof(length));
    head->recv(rank, kLengthSlot);
    if (absl::Status s = WaitRecv(*head, timeout); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("waiting for a message from rank ", rank, ": ", s.message()));
    }
    if (length > static_cast<uint64_t>(max_bytes)) {
      return absl::DataLossError(absl::StrCat("a message of ", length, " bytes from rank ", rank,
                                              " exceeds the limit of ", max_bytes));
    }
    out.resize(length);
    if (length > 0) {
      auto body = context_->createUnboundBuffer(out.data(), out.size());
      body->recv(rank, kBodySlot);
      if (absl::Status s = WaitRecv(*body, timeout_); !s.ok()) {
        return absl::UnavailableError(
            absl::StrCat("receiving ", length, " bytes from rank ", rank, ": ", s.message()));
      }
    }
  } catch (const std::exception& e) {
    return Failed(absl::StrCat("receiving from rank ", rank), e);
  }
  return out;
}

void GlooGroup::Abort() {
  std::lock_guard<std::mutex> lock(mu_);
  aborted_ = true;
  if (receiving_ != nullptr) receiving_->abortWaitRecv();
}

}  // namespace qtrain::cluster
