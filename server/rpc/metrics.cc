#include "server/rpc/metrics.h"

#include <algorithm>
#include <map>
#include <set>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/message.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "server/engine/session_id.h"
#include "server/rpc/process_metrics.h"

namespace qtrain::rpc {
namespace {

const prometheus::Histogram::BucketBoundaries& StepBuckets() {
  static const auto* b = new prometheus::Histogram::BucketBoundaries{
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  return *b;
}

// The labels of a served method, as go-grpc-prometheus names them. Any other path is
// "unknown": a client inventing method names must not grow the label sets without bound.
struct MethodLabels {
  std::string service = "unknown", method = "unknown", type = "unknown";
};

const MethodLabels& LabelsOf(const std::string& path) {
  static const auto* known = [] {
    auto* m = new std::map<std::string, MethodLabels>();
    for (const char* service :
         {"qtrain.v1.Trainer", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection",
          "grpc.reflection.v1alpha.ServerReflection"}) {
      const google::protobuf::ServiceDescriptor* d =
          google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service);
      for (int i = 0; d != nullptr && i < d->method_count(); ++i) {
        const google::protobuf::MethodDescriptor* md = d->method(i);
        const char* type = md->client_streaming()
                               ? (md->server_streaming() ? "bidi_stream" : "client_stream")
                               : (md->server_streaming() ? "server_stream" : "unary");
        (*m)[absl::StrCat("/", service, "/", md->name())] = {service, md->name(), type};
      }
    }
    return m;
  }();
  static const MethodLabels* unknown = new MethodLabels();
  auto it = known->find(path);
  return it == known->end() ? *unknown : it->second;
}

// Counts each call once, when its status is sent, and the bytes of its messages.
class CountingInterceptor final : public grpc::experimental::Interceptor {
 public:
  CountingInterceptor(Metrics* metrics, grpc::experimental::ServerRpcInfo* info)
      : metrics_(metrics),
        method_(info->method()),
        own_service_(LabelsOf(method_).service == "qtrain.v1.Trainer"),
        start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using Point = grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(Point::PRE_SEND_STATUS)) {
      metrics_->RecordRpc(method_, static_cast<int>(methods->GetSendStatus().error_code()),
                          SecondsSince(start_));
    }
    if (methods->QueryInterceptionHookPoint(Point::PRE_SEND_MESSAGE)) {
      if (grpc::ByteBuffer* b = methods->GetSerializedSendMessage()) {
        metrics_->RecordBytes(0, static_cast<int64_t>(b->Length()));
      }
    }
    // Our own service's methods are raw: its received messages are ByteBuffers (the health
    // and reflection services receive other types).
    if (own_service_ && methods->QueryInterceptionHookPoint(Point::POST_RECV_MESSAGE)) {
      if (void* m = methods->GetRecvMessage()) {
        metrics_->RecordBytes(static_cast<int64_t>(static_cast<grpc::ByteBuffer*>(m)->Length()), 0);
      }
    }
    methods->Proceed();
  }

 private:
  Metrics* metrics_;
  std::string method_;
  bool own_service_;
  std::chrono::steady_clock::time_point start_;  // the call's arrival
};

class CountingFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CountingFactory(Metrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(
      grpc::experimental::ServerRpcInfo* info) override {
    return new CountingInterceptor(metrics_, info);
  }

 private:
  Metrics* metrics_;
};

}  // namespace

Metrics::Metrics() : registry_(std::make_shared<prometheus::Registry>()) {
  steps_ = &prometheus::BuildCounter()
                .Name("qtrain_steps_total")
                .Help("Steps run, by mode (float, qat, qt, evaluate, calibrate)")
                .Register(*registry_);
  samples_ = &prometheus::BuildCounter()
                  .Name("qtrain_samples_total")
                  .Help("Examples processed, by mode")
                  .Register(*registry_);
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("qtrain_step_seconds")
                       .Help("Step latency on the session executor, by mode")
                       .Register(*registry_);
  loss_ = &prometheus::BuildGauge()
               .Name("qtrain_loss")
               .Help("Loss of the last training step, by session")
               .Register(*registry_);
  sessions_ = &prometheus::BuildGauge()
                   .Name("qtrain_sessions")
                   .Help("Sessions hosted")
                   .Register(*registry_)
                   .Add({});
  memory_ = &prometheus::BuildGauge()
                 .Name("qtrain_memory_bytes")
                 .Help(
                     "Each device's memory budget (host: --memory_budget_mb; 0: unlimited) and "
                     "what sessions, steps and uploads hold of it, refreshed after every RPC")
                 .Register(*registry_);
  rpc_seconds_ = &prometheus::BuildHistogram()
                      .Name("grpc_server_handling_seconds")
                      .Help("RPC latency from arrival to status (streams: their whole life)")
                      .Register(*registry_);
  rpcs_ = &prometheus::BuildCounter()
               .Name("grpc_server_handled_total")
               .Help("RPCs completed on the server, by method and status code")
               .Register(*registry_);
  auto& bytes = prometheus::BuildCounter()
                    .Name("qtrain_message_bytes_total")
                    .Help("Serialized message bytes, by direction")
                    .Register(*registry_);
  bytes_in_ = &bytes.Add({{"direction", "in"}});
  bytes_out_ = &bytes.Add({{"direction", "out"}});
  checkpoint_seconds_ =
      &prometheus::BuildHistogram()
           .Name("qtrain_checkpoint_seconds")
           .Help(
               "Checkpoint encode / write / load time, by kind (save, autosave, download, upload)")
           .Register(*registry_);
  checkpoint_bytes_ = &prometheus::BuildCounter()
                           .Name("qtrain_checkpoint_bytes_total")
                           .Help("Checkpoint bytes, by kind (save, autosave, download, upload)")
                           .Register(*registry_);
  checkpoint_errors_ = &prometheus::BuildCounter()
                            .Name("qtrain_checkpoint_errors_total")
                            .Help("Checkpoints that failed to save or load, by kind")
                            .Register(*registry_);
  // Present at 0 from the start, so that rate() and increase() see the first failure.
  for (const char* kind : {"save", "autosave", "download", "upload"}) {
    checkpoint_errors_->Add({{"kind", kind}});
  }
  auto& allreduce = prometheus::BuildCounter()
                        .Name("qtrain_dp_allreduce_seconds_total")
                        .Help(
                            "Data-parallel steps' gradient all-reduce time: all of it (reduce) "
                            "and what the steps waited for after their backward (exposed)")
                        .Register(*registry_);
  allreduce_seconds_ = &allreduce.Add({{"kind", "reduce"}});
  allreduce_exposed_seconds_ = &allreduce.Add({{"kind", "exposed"}});
}

absl::StatusOr<std::unique_ptr<Metrics>> Metrics::Serve(const std::string& address) {
  auto m = std::make_unique<Metrics>();
  try {
    m->exposer_ = std::make_unique<prometheus::Exposer>(address);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
  m->exposer_->RegisterCollectable(m->registry_);
  return m;
}

void Metrics::RecordStep(const std::string& mode, double seconds, int64_t examples) {
  steps_->Add({{"mode", mode}}).Increment();
  samples_->Add({{"mode", mode}}).Increment(static_cast<double>(examples));
  step_seconds_->Add({{"mode", mode}}, StepBuckets()).Observe(seconds);
}

namespace {
// A session's labels: its id and (servers with authentication) its tenant, never a token.
prometheus::Labels LossLabels(const std::string& session_id) {
  const absl::string_view tenant = engine::TenantOf(session_id);
  if (tenant.empty()) return {{"session", session_id}};
  return {{"session", session_id}, {"tenant", std::string(tenant)}};
}
}  // namespace

void Metrics::SetLoss(const std::string& session_id, double loss) {
  qtrain::MutexLock lock(&loss_mu_);  // the gauge must not be removed between Add and Set
  loss_->Add(LossLabels(session_id)).Set(loss);
}

void Metrics::ForgetSession(const std::string& session_id) {
  qtrain::MutexLock lock(&loss_mu_);
  const prometheus::Labels labels = LossLabels(session_id);
  if (loss_->Has(labels)) loss_->Remove(&loss_->Add(labels));
}

void Metrics::SetSessions(int64_t n) { sessions_->Set(static_cast<double>(n)); }

void Metrics::RecordRpc(const std::string& path, int code, double seconds) {
  const MethodLabels& m = LabelsOf(path);
  rpcs_
      ->Add({{"grpc_service", m.service},
             {"grpc_method", m.method},
             {"grpc_type", m.type},
             {"grpc_code", absl::StatusCodeToString(static_cast<absl::StatusCode>(code))}})
      .Increment();
  rpc_seconds_
      ->Add({{"grpc_service", m.service}, {"grpc_method", m.method}, {"grpc_type", m.type}},
            StepBuckets())
      .Observe(seconds);
  for (const DeviceMemory& d : memory_by_device_) {
    d.limit->Set(static_cast<double>(std::max<int64_t>(d.budget->limit(), 0)));
    d.reserved->Set(static_cast<double>(d.budget->used()));
  }
}

void Metrics::TrackMemory(const engine::DeviceBudgets* budgets) {
  for (const std::unique_ptr<engine::MemoryBudget>& b : budgets->all()) {
    memory_by_device_.push_back({b.get(),
                                 &memory_->Add({{"device", b->device()}, {"kind", "budget"}}),
                                 &memory_->Add({{"device", b->device()}, {"kind", "reserved"}})});
    memory_by_device_.back().limit->Set(static_cast<double>(std::max<int64_t>(b->limit(), 0)));
  }
}

void Metrics::RecordBytes(int64_t in, int64_t out) {
  if (in > 0) bytes_in_->Increment(static_cast<double>(in));
  if (out > 0) bytes_out_->Increment(static_cast<double>(out));
}

void Metrics::RecordCheckpoint(const std::string& kind, double seconds, int64_t bytes) {
  checkpoint_seconds_->Add({{"kind", kind}}, StepBuckets()).Observe(seconds);
  checkpoint_bytes_->Add({{"kind", kind}}).Increment(static_cast<double>(bytes));
}

void Metrics::SetHardwareInfo(const v1::ServerInfo& info) {
  prometheus::BuildGauge()
      .Name("qtrain_cpu_info")
      .Help("The CPU and the ISA levels qtrain dispatches at (value 1)")
      .Register(*registry_)
      .Add({{"cpu", info.cpu()},
            {"detected_isa", info.detected_isa()},
            {"active_isa", info.active_isa()}})
      .Set(1);
  auto& kernels = prometheus::BuildGauge()
                      .Name("qtrain_int8_kernel_info")
                      .Help("The int8 kernel chosen for each representative op (value 1)")
                      .Register(*registry_);
  for (const v1::Int8Kernel& k : info.int8_kernels()) {
    kernels.Add({{"op", k.op()}, {"kernel", k.chosen()}}).Set(1);
  }
  auto& floats = prometheus::BuildGauge()
                     .Name("qtrain_float_kernel_info")
                     .Help("The implementation chosen for each representative float op (value 1)")
                     .Register(*registry_);
  for (const v1::Implementation& k : info.implementations()) {
    floats.Add({{"op", k.op()}, {"kernel", k.chosen()}}).Set(1);
  }
}

int Metrics::port() const {
  if (exposer_ == nullptr) return 0;
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

std::string Metrics::Serialize() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  for (const auto& c :
       std::vector<std::shared_ptr<prometheus::Collectable>>{process_, sessions_view_}) {
    if (c == nullptr) continue;
    for (prometheus::MetricFamily& f : c->Collect()) families.push_back(std::move(f));
  }
  return prometheus::TextSerializer().Serialize(families);
}

void Metrics::RecordAllReduce(double reduce_seconds, double exposed_seconds) {
  allreduce_seconds_->Increment(reduce_seconds);
  allreduce_exposed_seconds_->Increment(exposed_seconds);
}

void Metrics::RecordCheckpointError(const std::string& kind) {
  checkpoint_errors_->Add({{"kind", kind}}).Increment();
}

void Metrics::TrackSessions(std::function<std::vector<engine::SessionInfo>()> list) {
  sessions_view_ = std::make_shared<SessionCollector>(std::move(list));
  if (exposer_ != nullptr) exposer_->RegisterCollectable(sessions_view_);
}

void Metrics::UntrackSessions() {
  if (sessions_view_ != nullptr) sessions_view_->Detach();
}

void Metrics::TrackProcess(const std::string& data_dir) {
  process_ = std::make_shared<ProcessCollector>(data_dir, QTRAIN_VERSION);
  if (exposer_ != nullptr) exposer_->RegisterCollectable(process_);
}

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>
Metrics::InterceptorFactory() {
  return std::make_unique<CountingFactory>(this);
}

}  // namespace qtrain::rpc
