// GlooGroup: one data-parallel group's connections, on Gloo's TCP transport (Debian's libgloo:
// no TLS — rank-to-rank traffic stays on a private network, docs/security.md). Ranks meet through
// a rendezvous store under the group's id; the group then carries the leader's messages to each
// rank (point to point) and the steps' all-reduces (Gloo's ring algorithm: every rank receives
// the same bits).
//
// Thread-safety: one caller at a time, except Abort (any thread). Any failure — a rank that has
// gone, a timeout — leaves the group unusable: its owner drops it and forms a new one.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"
#include "server/engine/collective.h"

namespace gloo {
class Context;
namespace rendezvous {
class Store;
}
namespace transport {
class UnboundBuffer;
}
}  // namespace gloo

namespace qtrain::cluster {

struct GroupConfig {
  // Where ranks meet: "file:///shared/dir" (one host, tests) or "redis://host:port".
  std::string rendezvous;
  std::string group_id;  // the store keys' prefix: unique per group, unguessable
  int rank = 0;
  int world_size = 1;
  std::string bind_host = "127.0.0.1";       // the address other ranks reach this one at
  std::chrono::milliseconds timeout{30000};  // connecting, and every collective
};

// Checks a rendezvous spec without connecting: InvalidArgument naming it.
absl::Status ValidateRendezvous(const std::string& rendezvous);

class GlooGroup final : public engine::Collective {
 public:
  // Connects to every other rank (blocks until all have joined). Unavailable when the store or
  // a rank cannot be reached in config.timeout; InvalidArgument for a bad config.
  static absl::StatusOr<std::unique_ptr<GlooGroup>> Connect(const GroupConfig& config);
  ~GlooGroup() override;

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  // Host tensors; several are packed into one buffer.
  absl::Status AllReduceSum(absl::Span<Tensor* const> tensors, float weight) override;
  absl::Status AllReduceSum(absl::Span<double> values) override;

  // A message to `rank` (length, then bytes). Unavailable when it cannot be delivered.
  absl::Status Send(int rank, const std::string& bytes);
  // The next message from `rank`, waiting up to `timeout`. Unavailable on a timeout, a closed
  // connection or Abort; DataLoss when it is longer than `max_bytes`.
  absl::StatusOr<std::string> Recv(int rank, std::chrono::milliseconds timeout, int64_t max_bytes);
  // Makes a waiting Recv return (shutdown).
  void Abort();

 private:
  explicit GlooGroup(const GroupConfig& config);
  absl::Status WaitRecv(gloo::transport::UnboundBuffer& buffer, std::chrono::milliseconds timeout);
  // Sum all-reduce of `n` elements in place; `what` names them in errors.
  template <typename T>
  absl::Status AllReduce(T* data, size_t n, const char* what);

  std::vector<float> packed_;                       // AllReduceSum's buffer for several tensors
  std::unique_ptr<gloo::rendezvous::Store> store_;  // the rendezvous, then its group prefix
  std::unique_ptr<gloo::rendezvous::Store> prefixed_;
  std::shared_ptr<gloo::Context> context_;
  const int rank_;
  const int size_;
  const std::chrono::milliseconds timeout_;
  uint32_t tag_ = 0;  // collectives' tags, in the order every rank runs them
  std::mutex mu_;
  gloo::transport::UnboundBuffer* receiving_ = nullptr;  // guarded by mu_
  bool aborted_ = false;                                 // guarded by mu_
};

}  // namespace qtrain::cluster
