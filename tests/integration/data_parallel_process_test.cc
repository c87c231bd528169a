// Data-parallel sessions across qtrain-server processes on 127.0.0.1: a leader and worker ranks
// that meet through a FileStore directory. 2- and 4-rank sessions train as one process does on
// the same batches; a rank killed or stopped mid-training fails the step UNAVAILABLE without
// an update, and the group re-forms from the leader once the rank is back.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "server/rpc/tensor_convert.h"
#include "server/store/checkpoint_io.h"
#include "tests/integration/server_process.h"

namespace qtrain {
namespace {

constexpr char kSpec[] = R"({"input": {"shape": [6]}, "body": {"sequential": {"layers": [
    {"linear": {"features": 32}}, {"activation": {"kind": "RELU"}},
    {"linear": {"features": 16}}, {"activation": {"kind": "GELU"}},
    {"linear": {"features": 3}}]}}})";
constexpr char kOptimizer[] = R"({"sgd": {"momentum": 0.9}, "schedule": {"learning_rate": 0.05}})";

v1::Batch MakeBatch(int seed, int64_t rows = 30) {
  Tensor x = Tensor::Empty(DType::kF32, {rows, 6});
  Tensor y = Tensor::Empty(DType::kS32, {rows});
  for (int64_t i = 0; i < rows * 6; ++i) x.data<float>()[i] = std::sin(0.9f * i + seed) * 2;
  for (int64_t i = 0; i < rows; ++i) y.data<int32_t>()[i] = (i * 7 + seed) % 3;
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

// A scratch directory with the cluster secret and a rendezvous directory.
struct Cluster {
  explicit Cluster(const std::string& secret = "0123456789abcdef0123456789abcdef") {
    char d[] = "/tmp/qtrain_dp_XXXXXX";
    EXPECT_NE(mkdtemp(d), nullptr);
    dir = d;
    mkdir((dir + "/rendezvous").c_str(), 0700);
    std::ofstream(dir + "/secret") << secret << "\n";
  }
  // Flags every server of the cluster shares.
  std::vector<std::string> Flags(std::vector<std::string> more = {}) const {
    std::vector<std::string> f = {"--dp_rendezvous=file://" + dir + "/rendezvous",
                                  "--dp_secret_file=" + dir + "/secret", "--dp_timeout_ms=3000"};
    f.insert(f.end(), more.begin(), more.end());
    return f;
  }
  std::string DataDir(const std::string& name) const {
    const std::string d = dir + "/" + name;
    mkdir(d.c_str(), 0700);
    return d;
  }
  std::string dir;
};

grpc::Status Create(v1::Trainer::Stub* stub, const std::string& id, int world,
                    v1::Session* out = nullptr, const std::string& backend = "") {
  v1::CreateSessionRequest req;
  req.set_session_id(id);
  req.set_backend(backend);
  req.set_seed(5);
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(kSpec, req.mutable_model()).ok());
  EXPECT_TRUE(
      google::protobuf::util::JsonStringToMessage(kOptimizer, req.mutable_optimizer()).ok());
  if (world > 0) req.mutable_data_parallel()->set_world_size(world);
  v1::Session created;
  grpc::ClientContext ctx;
  grpc::Status s = stub->CreateSession(&ctx, req, out != nullptr ? out : &created);
  return s;
}

// Trains `id` on batches [first, first + n): each step's loss, or the first error.
grpc::Status Train(v1::Trainer::Stub* stub, const std::string& id, int first, int n,
                   std::vector<double>* losses) {
  grpc::ClientContext ctx;
  auto stream = stub->Train(&ctx);
  for (int i = first; i < first + n; ++i) {
    v1::TrainRequest r;
    if (i == first) r.set_session_id(id);
    *r.mutable_batch() = MakeBatch(i);
    if (!stream->Write(r)) break;
    v1::TrainResponse resp;
    if (!stream->Read(&resp)) break;
    if (losses != nullptr) losses->push_back(resp.loss());
  }
  stream->WritesDone();
  v1::TrainResponse rest;
  while (stream->Read(&rest)) {
  }
  return stream->Finish();
}

// The session's checkpoint bytes.
std::string DownloadBytes(v1::Trainer::Stub* stub, const std::string& id) {
  grpc::ClientContext ctx;
  v1::DownloadCheckpointRequest req;
  req.set_session_id(id);
  auto reader = stub->DownloadCheckpoint(&ctx, req);
  std::string bytes;
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  EXPECT_TRUE(reader->Finish().ok());
  return bytes;
}

std::map<std::string, Tensor> Download(v1::Trainer::Stub* stub, const std::string& id) {
  auto file = store::DecodeCheckpoint(DownloadBytes(stub, id));
  EXPECT_TRUE(file.ok()) << file.status();
  return file.ok() ? file->tensors : std::map<std::string, Tensor>{};
}

// Relative to each parameter's peak.
void ExpectSameWeights(const std::map<std::string, Tensor>& got,
                       const std::map<std::string, Tensor>& want, double rel) {
  int compared = 0;
  for (const auto& [name, w] : want) {
    if (name.rfind("params/", 0) != 0) continue;
    ASSERT_TRUE(got.count(name)) << name;
    const Tensor& g = got.at(name);
    double diff = 0, peak = 0;
    for (int64_t i = 0; i < w.numel(); ++i) {
      diff = std::max(diff, std::abs(double{g.data<float>()[i]} - w.data<float>()[i]));
      peak = std::max(peak, std::abs(double{w.data<float>()[i]}));
    }
    EXPECT_LE(diff, rel * peak + 1e-7) << name;
    ++compared;
  }
  EXPECT_EQ(compared, 6);
}

std::string Address(const ServerProcess& p) { return absl::StrCat("127.0.0.1:", p.port()); }

TEST(DataParallelProcessTest, TwoAndFourRanksTrainAsOneProcess) {
  Cluster c;
  std::vector<std::unique_ptr<ServerProcess>> workers;
  std::vector<std::string> peers;
  for (int r = 1; r <= 3; ++r) {
    workers.push_back(std::make_unique<ServerProcess>(c.DataDir(absl::StrCat("w", r)), c.Flags(),
                                                      absl::StrCat("_w", r)));
    peers.push_back(Address(*workers.back()));
  }
  ServerProcess leader(c.DataDir("leader"), c.Flags({"--dp_peers=" + absl::StrJoin(peers, ",")}),
                       "_leader");
  auto stub = leader.Stub();
  v1::Session info;
  ASSERT_TRUE(Create(stub.get(), "one", 0).ok());
  ASSERT_TRUE(Create(stub.get(), "two", 2, &info).ok());
  EXPECT_EQ(info.world_size(), 2);
  ASSERT_TRUE(Create(stub.get(), "four", 4).ok());
  std::vector<double> one, two, four;
  ASSERT_TRUE(Train(stub.get(), "one", 0, 10, &one).ok());
  grpc::Status s2 = Train(stub.get(), "two", 0, 10, &two);
  ASSERT_TRUE(s2.ok()) << s2.error_message();
  grpc::Status s4 = Train(stub.get(), "four", 0, 10, &four);  // 30 rows: 8, 8, 7, 7
  ASSERT_TRUE(s4.ok()) << s4.error_message();
  ASSERT_EQ(two.size(), 10u);
  ASSERT_EQ(four.size(), 10u);
  for (size_t i = 0; i < one.size(); ++i) {
    EXPECT_NEAR(two[i], one[i], 1e-5 * one[i]) << "step " << i;
    EXPECT_NEAR(four[i], one[i], 1e-5 * one[i]) << "step " << i;
  }
  // A session on the reference backend: its ranks run on it too, and agree with oneDNN's run.
  ASSERT_TRUE(Create(stub.get(), "two-ref", 2, &info, "reference").ok());
  EXPECT_EQ(info.backend(), "reference");
  std::vector<double> ref;
  grpc::Status sr = Train(stub.get(), "two-ref", 0, 10, &ref);
  ASSERT_TRUE(sr.ok()) << sr.error_message();
  ASSERT_EQ(ref.size(), 10u);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(ref[i], one[i], 1e-4 * one[i]) << i;
  const auto want = Download(stub.get(), "one");
  ExpectSameWeights(Download(stub.get(), "two"), want, 1e-5);
  ExpectSameWeights(Download(stub.get(), "four"), want, 1e-5);
  // The leader's metrics count the all-reduce time of its 20 data-parallel steps.
  const std::string metrics = Scrape(leader.metrics_port_);
  const size_t at = metrics.find("qtrain_dp_allreduce_seconds_total{kind=\"reduce\"} ");
  ASSERT_NE(at, std::string::npos) << metrics;
  EXPECT_GT(std::atof(metrics.c_str() + metrics.find(' ', at) + 1), 0.0);

  // Too many ranks for the peers, and a batch smaller than the world: refused by name.
  grpc::Status too_many = Create(stub.get(), "five", 5);
  EXPECT_EQ(too_many.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(too_many.error_message(), ::testing::HasSubstr("data_parallel.world_size 5"));
  // A worker server has no peers of its own: it cannot lead a group.
  auto worker_stub = workers[0]->Stub();
  EXPECT_EQ(Create(worker_stub.get(), "w", 2).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

grpc::Status SetRules(v1::Trainer::Stub* stub, const std::string& id, const std::string& json) {
  v1::UpdateRulesRequest req;
  req.set_session_id(id);
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, req.mutable_rules()).ok());
  v1::Session out;
  grpc::ClientContext ctx;
  return stub->UpdateRules(&ctx, req, &out);
}

grpc::Status Calibrate(v1::Trainer::Stub* stub, const std::string& id, int batches) {
  grpc::ClientContext ctx;
  auto stream = stub->Calibrate(&ctx);
  for (int i = 0; i < batches; ++i) {
    v1::CalibrateRequest r;
    if (i == 0) r.set_session_id(id);
    *r.mutable_inputs() = MakeBatch(100 + i).inputs();
    if (!stream->Write(r)) break;
  }
  stream->WritesDone();
  v1::CalibrateResponse progress;
  while (stream->Read(&progress)) {
  }
  return stream->Finish();
}

// Rules changes and calibration run on the leader; the ranks get its state before the next step.
// A restarted leader restores the session as data-parallel.
TEST(DataParallelProcessTest, RulesCalibrationAndRestartFollowTheLeader) {
  Cluster c;
  ServerProcess worker(c.DataDir("w1"), c.Flags(), "_w1");
  const std::vector<std::string> flags = c.Flags({"--dp_peers=" + Address(worker)});
  const std::string leader_dir = c.DataDir("leader");
  {
    ServerProcess leader(leader_dir, flags, "_leader");
    auto stub = leader.Stub();
    ASSERT_TRUE(Create(stub.get(), "one", 0).ok());
    ASSERT_TRUE(Create(stub.get(), "dp", 2).ok());
    constexpr char kSrq[] = R"({"rules": [{"module_path": ".*", "weight_qtype": "int8",
        "act_qtype": "int8", "act_static_scale": true}]})";
    std::vector<double> one, dp;
    for (const std::string id : {"one", "dp"}) {
      std::vector<double>* losses = id == "one" ? &one : &dp;
      ASSERT_TRUE(Train(stub.get(), id, 0, 3, losses).ok()) << id;
      ASSERT_TRUE(SetRules(stub.get(), id, kSrq).ok()) << id;
      ASSERT_TRUE(Calibrate(stub.get(), id, 2).ok()) << id;
      grpc::Status s = Train(stub.get(), id, 3, 3, losses);
      ASSERT_TRUE(s.ok()) << id << ": " << s.error_message();
    }
    ASSERT_EQ(dp.size(), 6u);
    for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(dp[i], one[i], 1e-5 * one[i]) << "step " << i;
    const auto want = Download(stub.get(), "one");
    const auto got = Download(stub.get(), "dp");
    ExpectSameWeights(got, want, 1e-5);
    for (const auto& [name, t] : want) {  // the calibrated, then trained, statistics
      if (name.rfind("quant_stats/", 0) != 0 || t.dtype() != DType::kF32) continue;
      for (int64_t i = 0; i < t.numel(); ++i) {
        EXPECT_NEAR(got.at(name).data<float>()[i], t.data<float>()[i],
                    1e-5 * std::abs(t.data<float>()[i]) + 1e-6)
            << name;
      }
    }
    EXPECT_EQ(leader.Kill(SIGTERM), 0);  // drains and saves every session
  }
  ServerProcess leader(leader_dir, flags, "_leader2");
  auto stub = leader.Stub();
  v1::GetSessionRequest get;
  get.set_session_id("dp");
  v1::Session session;
  grpc::ClientContext gctx;
  ASSERT_TRUE(stub->GetSession(&gctx, get, &session).ok());
  EXPECT_EQ(session.world_size(), 2);
  EXPECT_EQ(session.step(), 6);
  grpc::Status more = Train(stub.get(), "dp", 6, 2, nullptr);
  EXPECT_TRUE(more.ok()) << more.error_message();

  // Its checkpoint uploaded as a new session (qtrain rebalance moves sessions so) is
  // data-parallel again.
  const std::string bytes = DownloadBytes(stub.get(), "dp");
  ASSERT_FALSE(bytes.empty());
  grpc::ClientContext uctx;
  v1::CheckpointInfo uploaded;
  auto writer = stub->UploadCheckpoint(&uctx, &uploaded);
  v1::CheckpointChunk up;
  up.set_session_id("dp-copy");
  up.set_data(bytes);
  ASSERT_TRUE(writer->Write(up));
  writer->WritesDone();
  grpc::Status u = writer->Finish();
  ASSERT_TRUE(u.ok()) << u.error_message();
  v1::Session copy;
  grpc::ClientContext cctx;
  get.set_session_id("dp-copy");
  ASSERT_TRUE(stub->GetSession(&cctx, get, &copy).ok());
  EXPECT_EQ(copy.world_size(), 2);
  EXPECT_EQ(copy.step(), 8);
  grpc::Status copy_step = Train(stub.get(), "dp-copy", 8, 1, nullptr);
  EXPECT_TRUE(copy_step.ok()) << copy_step.error_message();
}

TEST(DataParallelProcessTest, AKilledRankFailsTheStepAndTheGroupReformsWhenItIsBack) {
  Cluster c;
  auto worker = std::make_unique<ServerProcess>(c.DataDir("w1"), c.Flags(), "_w1");
  const std::string address = Address(*worker);
  ServerProcess leader(c.DataDir("leader"), c.Flags({"--dp_peers=" + address}), "_leader");
  auto stub = leader.Stub();
  ASSERT_TRUE(Create(stub.get(), "one", 0).ok());
  ASSERT_TRUE(Create(stub.get(), "dp", 2).ok());
  std::vector<double> losses;
  ASSERT_TRUE(Train(stub.get(), "dp", 0, 3, &losses).ok());

  worker->Kill(SIGKILL);
  const auto start = std::chrono::steady_clock::now();
  grpc::Status failed = Train(stub.get(), "dp", 3, 1, nullptr);
  EXPECT_EQ(failed.error_code(), grpc::StatusCode::UNAVAILABLE) << failed.error_message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  v1::GetSessionRequest get;
  get.set_session_id("dp");
  v1::Session session;
  grpc::ClientContext gctx;
  ASSERT_TRUE(stub->GetSession(&gctx, get, &session).ok());  // the leader keeps the session
  EXPECT_EQ(session.step(), 3);                              // and applied nothing

  // The rank comes back on its address; the next step re-forms the group from the leader.
  worker =
      std::make_unique<ServerProcess>(c.DataDir("w1b"), c.Flags({"--listen=" + address}), "_w1b");
  ASSERT_EQ(Address(*worker), address);
  grpc::Status resumed = Train(stub.get(), "dp", 3, 3, &losses);
  ASSERT_TRUE(resumed.ok()) << resumed.error_message();

  // Six steps on batches 0..5, as one process trains them: the failed step left no trace.
  std::vector<double> one;
  ASSERT_TRUE(Train(stub.get(), "one", 0, 6, &one).ok());
  ASSERT_EQ(losses.size(), 6u);
  for (size_t i = 0; i < 6; ++i) EXPECT_NEAR(losses[i], one[i], 1e-5 * one[i]) << i;
  ExpectSameWeights(Download(stub.get(), "dp"), Download(stub.get(), "one"), 1e-5);
}

TEST(DataParallelProcessTest, AStoppedRankTimesOutAndStrangersCannotJoin) {
  Cluster c;
  ServerProcess worker(c.DataDir("w1"), c.Flags(), "_w1");
  // A server with another secret cannot lead this worker: JoinGroup's proof is refused.
  Cluster other("another secret of 32 characters.");
  ServerProcess stranger(c.DataDir("stranger"),
                         other.Flags({"--dp_peers=" + Address(worker),
                                      "--dp_rendezvous=file://" + c.dir + "/rendezvous"}),
                         "_stranger");
  auto sstub = stranger.Stub();
  ASSERT_TRUE(Create(sstub.get(), "x", 2).ok());
  grpc::Status refused = Train(sstub.get(), "x", 0, 1, nullptr);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("cluster secret"));

  ServerProcess leader(c.DataDir("leader"), c.Flags({"--dp_peers=" + Address(worker)}), "_leader");
  auto stub = leader.Stub();
  ASSERT_TRUE(Create(stub.get(), "dp", 2).ok());
  ASSERT_TRUE(Train(stub.get(), "dp", 0, 2, nullptr).ok());
  worker.Signal(SIGSTOP);  // hangs: only the collective timeout (3 s) notices
  const auto start = std::chrono::steady_clock::now();
  grpc::Status hung = Train(stub.get(), "dp", 2, 1, nullptr);
  EXPECT_EQ(hung.error_code(), grpc::StatusCode::UNAVAILABLE) << hung.error_message();
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  worker.Signal(SIGCONT);
  // The stopped rank's group is gone; the next step forms a new one with the same server.
  grpc::Status again = Train(stub.get(), "dp", 2, 2, nullptr);
  EXPECT_TRUE(again.ok()) << again.error_message();
}

// A port nothing listens on right now.
int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// Across hosts ranks meet through a key-value service: Debian's redis-server here.
TEST(DataParallelProcessTest, RanksMeetThroughRedis) {
  Cluster c;
  const int port = FreePort();
  const pid_t redis = fork();
  if (redis == 0) {
    const int fd = open((c.dir + "/redis.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    const std::string p = std::to_string(port);
    execlp("redis-server", "redis-server", "--port", p.c_str(), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", static_cast<char*>(nullptr));
    _exit(127);
  }
  struct Reap {
    pid_t pid;
    ~Reap() {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  } reap{redis};
  const std::string rendezvous = absl::StrCat("--dp_rendezvous=redis://127.0.0.1:", port);
  ServerProcess worker(c.DataDir("w1"), c.Flags({rendezvous}), "_w1");
  ServerProcess leader(c.DataDir("leader"), c.Flags({rendezvous, "--dp_peers=" + Address(worker)}),
                       "_leader");
  auto stub = leader.Stub();
  ASSERT_TRUE(Create(stub.get(), "one", 0).ok());
  ASSERT_TRUE(Create(stub.get(), "dp", 2).ok());
  std::vector<double> one, dp;
  ASSERT_TRUE(Train(stub.get(), "one", 0, 5, &one).ok());
  grpc::Status s = Train(stub.get(), "dp", 0, 5, &dp);  // redis-server may take a moment to listen
  ASSERT_TRUE(s.ok()) << s.error_message() << " (is redis-server installed? see " << c.dir
                      << "/redis.log)";
  ASSERT_EQ(dp.size(), one.size());
  for (size_t i = 0; i < one.size(); ++i) EXPECT_NEAR(dp[i], one[i], 1e-5 * one[i]) << i;
  ExpectSameWeights(Download(stub.get(), "dp"), Download(stub.get(), "one"), 1e-5);
}

}  // namespace
}  // namespace qtrain
