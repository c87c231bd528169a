#include "server/cluster/dp_worker.h"

#include <omp.h>

#include <atomic>
#include <chrono>
#include <map>
#include <thread>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kernels/backend/backend.h"
#include "kernels/backend/backend_registry.h"
#include "kernels/status_macros.h"
#include "server/cluster/dp_leader.h"
#include "server/cluster/dp_protocol.h"
#include "server/cluster/gloo_group.h"
#include "server/cluster/group_auth.h"
#include "server/engine/trainer.h"
#include "server/log.h"

namespace qtrain::cluster {
namespace {

namespace proto = ::qtrain::v1;

bool IsHexId(const std::string& s) {
  if (s.size() != 32) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// One message from the leader, applied to this rank's replica. Unavailable when the group is
// unusable; any other error ends the rank as well (the leader sees it leave).
// The replica a rank keeps: its trainer, and the share of this server's memory budget it holds.
struct Replica {
  engine::MemoryBudget::Lease lease;
  std::unique_ptr<engine::Trainer> trainer;
};

absl::Status Apply(const Message& m, const JoinRequest& join, GlooGroup& group,
                   const engine::DeviceBudgets* budgets, Replica& replica) {
  std::unique_ptr<engine::Trainer>& trainer = replica.trainer;
  switch (m.kind) {
    case MessageKind::kSetup: {
      proto::ModelSpec spec;
      proto::OptimizerConfig optimizer;
      if (m.blobs.size() != 3 || !spec.ParseFromString(m.blobs[0]) ||
          !optimizer.ParseFromString(m.blobs[1])) {
        return absl::DataLossError("setup: unreadable model, optimizer or backend");
      }
      // The replica counts against this server's budget of the backend's device as a session
      // would (ResourceExhausted ends the rank; the leader's step fails UNAVAILABLE naming it).
      engine::MemoryBudget* budget =
          budgets != nullptr ? budgets->For(BackendMemory(m.blobs[2])) : nullptr;
      QTRAIN_ASSIGN_OR_RETURN(engine::ModelFootprint footprint, engine::Model::Estimate(spec));
      QTRAIN_ASSIGN_OR_RETURN(replica.lease, engine::MemoryBudget::Reserve(
                                                 budget, engine::SessionBytes(footprint, optimizer),
                                                 absl::StrCat("data-parallel rank ", join.rank,
                                                              " of group ", join.group_id)));
      // The leader's backend (an unknown name, from a newer leader, ends the rank naming it).
      QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(m.blobs[2]));
      QTRAIN_ASSIGN_OR_RETURN(trainer, engine::Trainer::Create(spec, proto::RuleSet(), optimizer,
                                                               m.seed, std::move(backend)));
      trainer->set_memory_budget(budget);
      return absl::OkStatus();
    }
    case MessageKind::kState: {
      proto::RuleSet rules;
      if (trainer == nullptr) return absl::FailedPreconditionError("state before setup");
      if (m.blobs.size() != 1 || !rules.ParseFromString(m.blobs[0])) {
        return absl::DataLossError("state: unreadable rules");
      }
      QTRAIN_RETURN_IF_ERROR(trainer->SetRules(rules));
      std::map<std::string, Tensor> state;
      for (const auto& [name, t] : m.tensors) state.emplace(name, t.Share());
      return trainer->ImportState(state, m.step);
    }
    case MessageKind::kTrain: {
      if (trainer == nullptr) return absl::FailedPreconditionError("shard before setup");
      if (m.tensors.size() != 2) return absl::DataLossError("shard: expected inputs, targets");
      double ack[1] = {1.0};
      QTRAIN_RETURN_IF_ERROR(group.AllReduceSum(absl::MakeSpan(ack)));
      engine::Batch shard{m.tensors[0].second.Share(), m.tensors[1].second.Share()};
      absl::StatusOr<engine::StepResult> r =
          trainer->TrainShard(shard, group, m.weight, join.bucket_bytes);
      // Errors every rank sees alike (gradients not finite) keep the group; the rest end it.
      if (!r.ok() && r.status().code() != absl::StatusCode::kFailedPrecondition) {
        return r.status();
      }
      return absl::OkStatus();
    }
    case MessageKind::kLeave:
      return absl::CancelledError("the leader ended the group");
  }
  return absl::DataLossError("unknown message");
}

}  // namespace

struct WorkerRanks::Rank {
  JoinRequest join;
  std::thread thread;
  std::atomic<bool> finished{false};
  qtrain::Mutex mu;
  GlooGroup* group ABSL_GUARDED_BY(mu) = nullptr;
  bool aborted ABSL_GUARDED_BY(mu) = false;
};

WorkerRanks::WorkerRanks(ClusterOptions options, const engine::DeviceBudgets* budgets)
    : options_(std::move(options)), budgets_(budgets) {}

WorkerRanks::~WorkerRanks() { Shutdown(); }

absl::Status WorkerRanks::Join(const JoinRequest& r) {
  if (!options_.enabled()) {
    return absl::FailedPreconditionError(
        "this server takes no data-parallel work: start it with --dp_rendezvous and "
        "--dp_secret_file");
  }
  if (options_.secret.empty()) {
    return absl::PermissionDeniedError("this server has no cluster secret (--dp_secret_file)");
  }
  if (!IsHexId(r.group_id)) {
    return absl::InvalidArgumentError(absl::StrCat("group_id \"",
                                                   absl::CHexEscape(r.group_id.substr(0, 64)),
                                                   "\": expected 32 lowercase hex digits"));
  }
  if (r.world_size < 2 || r.world_size > 64 || r.rank < 1 || r.rank >= r.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", r.rank, " of world_size ", r.world_size,
                     ": a worker's rank must be in [1, world_size) with world_size in [2, 64]"));
  }
  if (r.timeout_ms < 100 || r.timeout_ms > 3600000) {
    return absl::InvalidArgumentError(
        absl::StrCat("timeout_ms ", r.timeout_ms, " must be in [100, 3600000]"));
  }
  if (r.bucket_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("bucket_bytes ", r.bucket_bytes, " must be positive"));
  }
  if (!ProofEquals(r.proof, JoinProof(options_.secret, r.group_id, r.rank, r.world_size))) {
    return absl::PermissionDeniedError(
        "proof: not signed with this server's cluster secret (--dp_secret_file differs?)");
  }
  qtrain::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down");
  ReapFinished();
  if (static_cast<int>(ranks_.size()) >= options_.max_worker_groups) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this server already serves ", ranks_.size(),
                     " data-parallel groups as a worker (--dp_max_worker_groups)"));
  }
  auto rank = std::make_unique<Rank>();
  rank->join = r;
  Rank* raw = rank.get();
  rank->thread = std::thread([this, raw] { Serve(raw); });
  ranks_.push_back(std::move(rank));
  return absl::OkStatus();
}

void WorkerRanks::Serve(Rank* rank) {
  omp_set_num_threads(options_.threads);
  const JoinRequest& join = rank->join;
  GroupConfig config;
  config.rendezvous = options_.rendezvous;
  config.group_id = join.group_id;
  config.rank = join.rank;
  config.world_size = join.world_size;
  config.bind_host = options_.bind_host;
  config.timeout = std::chrono::milliseconds(join.timeout_ms);
  const std::string name =
      absl::StrCat(" data-parallel rank ", join.rank, " of group ", join.group_id);
  absl::Status status;
  absl::StatusOr<std::unique_ptr<GlooGroup>> group = GlooGroup::Connect(config);
  if (group.ok()) {
    {
      qtrain::MutexLock lock(&rank->mu);
      rank->group = group->get();
      if (rank->aborted) (*group)->Abort();
    }
    server::LogEvent(server::LogLevel::kInfo, "dp_join", name + ": joined",
                     {{"group", join.group_id}, {"rank", std::to_string(join.rank)}});
    status = (*group)->Send(0, RankProof(options_.secret, join.group_id, join.rank));
    Replica replica;
    while (status.ok()) {
      absl::StatusOr<std::string> bytes = (*group)->Recv(
          0, std::chrono::milliseconds(options_.idle_timeout_ms), options_.max_message_bytes);
      if (!bytes.ok()) {
        status = bytes.status();
        break;
      }
      absl::StatusOr<Message> m = Decode(*bytes);
      status = m.ok() ? Apply(*m, join, **group, budgets_, replica) : m.status();
    }
    qtrain::MutexLock lock(&rank->mu);
    rank->group = nullptr;
  } else {
    status = group.status();
  }
  const bool clean = status.code() == absl::StatusCode::kCancelled;
  server::LogEvent(clean ? server::LogLevel::kInfo : server::LogLevel::kWarning, "dp_leave",
                   absl::StrCat(name, ": left (", status.message(), ")"),
                   {{"group", join.group_id}, {"rank", std::to_string(join.rank)}});
  group = absl::UnavailableError("closed");  // closes the connections before `finished`
  rank->finished = true;
}

void WorkerRanks::ReapFinished() {
  for (auto it = ranks_.begin(); it != ranks_.end();) {
    if ((*it)->finished) {
      (*it)->thread.join();
      it = ranks_.erase(it);
    } else {
      ++it;
    }
  }
}

void WorkerRanks::Shutdown() {
  std::vector<std::unique_ptr<Rank>> ranks;
  {
    qtrain::MutexLock lock(&mu_);
    stopping_ = true;
    ranks.swap(ranks_);
  }
  for (auto& r : ranks) {
    {
      qtrain::MutexLock lock(&r->mu);
      r->aborted = true;
      if (r->group != nullptr) r->group->Abort();
    }
    r->thread.join();
  }
}

}  // namespace qtrain::cluster
