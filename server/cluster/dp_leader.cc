#include "server/cluster/dp_leader.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include <chrono>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "qtrain/v1/cluster.grpc.pb.h"
#include "server/cluster/dp_protocol.h"
#include "server/cluster/group_auth.h"

namespace qtrain::cluster {
namespace {

namespace proto = ::qtrain::v1;

constexpr int kMaxWorld = 64;

absl::Status Unavailable(const absl::Status& s, const std::string& context) {
  return absl::UnavailableError(absl::StrCat(context, ": ", s.message()));
}

}  // namespace

absl::Status CheckWorldSize(const ClusterOptions& options, int world_size) {
  if (world_size < 1 || world_size > kMaxWorld) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_parallel.world_size ", world_size, " must be in [1, ", kMaxWorld, "]"));
  }
  if (world_size == 1) return absl::OkStatus();
  if (!options.enabled()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "data_parallel.world_size ", world_size,
        ": this server has no data-parallel group configured (qtrain-server --dp_rendezvous, "
        "--dp_peers, --dp_secret_file)"));
  }
  if (static_cast<size_t>(world_size - 1) > options.peers.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("data_parallel.world_size ", world_size, " needs ", world_size - 1,
                     " worker ranks; this server has ", options.peers.size(), " --dp_peers"));
  }
  return absl::OkStatus();
}

DataParallelLeader::DataParallelLeader(const ClusterOptions& options, int world_size,
                                       std::string session_id)
    : options_(options), world_size_(world_size), session_id_(std::move(session_id)) {}

DataParallelLeader::~DataParallelLeader() { Drop(); }

void DataParallelLeader::Drop() {
  if (group_ == nullptr) return;
  Message leave;
  leave.kind = MessageKind::kLeave;
  const std::string bytes = Encode(leave);
  for (int r = 1; r < world_size_; ++r) (void)group_->Send(r, bytes);  // best effort
  group_.reset();
  synced_ = false;
}

absl::Status DataParallelLeader::Form(engine::Trainer& trainer) {
  QTRAIN_ASSIGN_OR_RETURN(const std::string group_id, NewGroupId());
  const auto timeout = std::chrono::milliseconds(options_.timeout_ms);
  for (int r = 1; r < world_size_; ++r) {
    const std::string& peer = options_.peers[r - 1];
    std::shared_ptr<grpc::Channel>& channel = channels_[peer];
    if (channel == nullptr) {
      channel =
          grpc::CreateChannel(peer, options_.peer_credentials ? options_.peer_credentials
                                                              : grpc::InsecureChannelCredentials());
    }
    auto stub = proto::Cluster::NewStub(channel);
    proto::JoinGroupRequest req;
    req.set_group_id(group_id);
    req.set_rank(r);
    req.set_world_size(world_size_);
    req.set_proof(JoinProof(options_.secret, group_id, r, world_size_));
    req.set_timeout_ms(options_.timeout_ms);
    req.set_bucket_bytes(options_.bucket_bytes);
    proto::JoinGroupResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + timeout);
    ctx.set_wait_for_ready(true);  // a restarted peer may still be coming up
    grpc::Status s = stub->JoinGroup(&ctx, req, &resp);
    if (!s.ok()) {
      channels_.erase(peer);  // the next formation connects afresh
      return absl::UnavailableError(absl::StrCat("data-parallel rank ", r, " (", peer,
                                                 ") did not join: ", s.error_message()));
    }
  }
  GroupConfig config;
  config.rendezvous = options_.rendezvous;
  config.group_id = group_id;
  config.rank = 0;
  config.world_size = world_size_;
  config.bind_host = options_.bind_host;
  config.timeout = timeout;
  absl::StatusOr<std::unique_ptr<GlooGroup>> group = GlooGroup::Connect(config);
  if (!group.ok()) return group.status();
  // Only ranks this leader invited know the proofs: a stranger that read the store's keys and
  // connected in a rank's place is refused here, before any state leaves the leader.
  for (int r = 1; r < world_size_; ++r) {
    absl::StatusOr<std::string> proof = (*group)->Recv(r, timeout, 64);
    if (!proof.ok()) return Unavailable(proof.status(), absl::StrCat("rank ", r, "'s proof"));
    if (!ProofEquals(*proof, RankProof(options_.secret, group_id, r))) {
      return absl::PermissionDeniedError(
          absl::StrCat("data-parallel rank ", r, " of group ", group_id,
                       " presented a wrong proof (a process that was not invited)"));
    }
  }
  Message setup;
  setup.kind = MessageKind::kSetup;
  setup.seed = trainer.seed();
  // The ranks run on the leader's backend: a data-parallel session computes the same wherever its
  // shards go.
  setup.blobs = {trainer.model().spec().SerializeAsString(),
                 trainer.optimizer_config().SerializeAsString(), trainer.backend_name()};
  const std::string bytes = Encode(setup);
  for (int r = 1; r < world_size_; ++r) {
    if (absl::Status s = (*group)->Send(r, bytes); !s.ok()) return s;
  }
  group_ = std::move(*group);
  synced_ = false;
  return absl::OkStatus();
}

absl::Status DataParallelLeader::SendState(engine::Trainer& trainer) {
  Message state;
  state.kind = MessageKind::kState;
  state.step = trainer.step();
  const engine::CompiledRules* rules = trainer.model().rules();
  state.blobs = {rules != nullptr ? rules->source().SerializeAsString() : std::string()};
  QTRAIN_ASSIGN_OR_RETURN(auto tensors, trainer.ExportState());
  for (auto& [name, t] : tensors) state.tensors.emplace_back(name, std::move(t));
  const std::string bytes = Encode(state);
  for (int r = 1; r < world_size_; ++r) QTRAIN_RETURN_IF_ERROR(group_->Send(r, bytes));
  return absl::OkStatus();
}

absl::Status DataParallelLeader::SendShards(const Tensor& inputs, const Tensor& targets,
                                            int64_t* leader_rows) {
  const int64_t rows = inputs.dim(0);
  int64_t begin = 0;
  for (int r = 0; r < world_size_; ++r) {
    const int64_t n = rows / world_size_ + (r < rows % world_size_ ? 1 : 0);
    if (r == 0) {
      *leader_rows = n;
    } else {
      Message m;
      m.kind = MessageKind::kTrain;
      m.weight = static_cast<float>(static_cast<double>(n) / static_cast<double>(rows));
      m.tensors.emplace_back("inputs", SliceRows(inputs, begin, begin + n));
      m.tensors.emplace_back("targets", SliceRows(targets, begin, begin + n));
      QTRAIN_RETURN_IF_ERROR(group_->Send(r, Encode(m)));
    }
    begin += n;
  }
  // Every rank took its shard and is alive: only then does the leader start its own part.
  double ack[1] = {1.0};
  QTRAIN_RETURN_IF_ERROR(group_->AllReduceSum(absl::MakeSpan(ack)));
  if (ack[0] != world_size_) return absl::UnavailableError("a rank did not take its shard");
  return absl::OkStatus();
}

absl::StatusOr<engine::ShardedStep> DataParallelLeader::Begin(engine::Trainer& trainer,
                                                              const Tensor& inputs,
                                                              const Tensor& targets) {
  const int64_t rows = inputs.dim(0);
  if (rows < world_size_) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", rows, " examples: a data-parallel session of world_size ",
                     world_size_, " needs at least one example per rank"));
  }
  absl::Status last;
  for (int attempt = 0; attempt < 2; ++attempt) {
    bool formed = false;
    if (group_ == nullptr) {
      last = Form(trainer);
      if (!last.ok()) {
        return absl::UnavailableError(absl::StrCat("session ", session_id_,
                                                   ": forming its data-parallel group of ",
                                                   world_size_, " ranks: ", last.message()));
      }
      formed = true;
    }
    const bool current = synced_ && synced_generation_ == trainer.generation() &&
                         synced_step_ == trainer.step() && synced_rules_ == trainer.model().rules();
    last = current ? absl::OkStatus() : SendState(trainer);
    int64_t leader_rows = 0;
    if (last.ok()) last = SendShards(inputs, targets, &leader_rows);
    if (last.ok()) {
      engine::ShardedStep step;
      step.inputs = SliceRows(inputs, 0, leader_rows);
      step.targets = SliceRows(targets, 0, leader_rows);
      step.collective = group_.get();
      step.shard_weight =
          static_cast<float>(static_cast<double>(leader_rows) / static_cast<double>(rows));
      return step;
    }
    // A rank left since the last step (restarted, idle timeout): a new group, once.
    group_.reset();
    synced_ = false;
    if (formed) break;
  }
  return absl::UnavailableError(absl::StrCat(
      "session ", session_id_, ": a data-parallel rank is unreachable: ", last.message()));
}

void DataParallelLeader::End(engine::Trainer& trainer, const absl::Status& step_status) {
  if (!step_status.ok()) {
    // The ranks may have stopped anywhere in the step: a new group starts from the leader.
    group_.reset();
    synced_ = false;
    return;
  }
  synced_ = true;
  synced_generation_ = trainer.generation();
  synced_step_ = trainer.step();
  synced_rules_ = trainer.model().rules();
}

}  // namespace qtrain::cluster
