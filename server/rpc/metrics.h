// Prometheus metrics of qtrain-server, served by prometheus-cpp's pull exposer on /metrics.
// Families are created once at startup; handlers and executors only increment (style.md §17).
//
// Thread-safe (prometheus-cpp metrics are atomic). The Metrics object must outlive the server.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include <grpcpp/support/server_interceptor.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/statusor.h"
#include "kernels/sync.h"
#include "qtrain/v1/trainer_service.pb.h"
#include "server/engine/memory_budget.h"
#include "server/engine/session.h"
#include "server/rpc/process_metrics.h"

namespace qtrain::rpc {

// Seconds from `start` to now, for the latency histograms.
inline double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

class Metrics {
 public:
  // Metrics registered but not exposed (tests read them through Serialize).
  Metrics();
  // Also starts the HTTP exposer on `address` ("127.0.0.1:9464"). Unavailable when it cannot
  // bind.
  static absl::StatusOr<std::unique_ptr<Metrics>> Serve(const std::string& address);

  // One training / evaluation / calibration step of `mode` ("float", "qat", "qt",
  // "calibrate", "evaluate") over `examples` examples.
  void RecordStep(const std::string& mode, double seconds, int64_t examples);
  void SetLoss(const std::string& session_id, double loss);
  // Drops the deleted session's series (its loss gauge), so labels do not pile up.
  void ForgetSession(const std::string& session_id);
  void SetSessions(int64_t n);
  // A finished call of `path` ("/pkg.Service/Method") with its status code and duration:
  // grpc_server_handled_total and grpc_server_handling_seconds (go-grpc-prometheus names).
  void RecordRpc(const std::string& path, int code, double seconds);
  void RecordBytes(int64_t in, int64_t out);
  // A checkpoint of `kind` ("save", "autosave", "download", "upload") encoded or loaded.
  void RecordCheckpoint(const std::string& kind, double seconds, int64_t bytes);
  // A checkpoint of `kind` that failed (qtrain_checkpoint_errors_total: the autosave alert).
  void RecordCheckpointError(const std::string& kind);
  // A data-parallel step's gradient all-reduce: its time, and the part of it the step waited for
  // after its backward pass (qtrain_dp_allreduce_seconds_total{kind="reduce"|"exposed"}).
  void RecordAllReduce(double reduce_seconds, double exposed_seconds);
  // Also report process_* (RSS, CPU, fds), the data dir's free bytes (`data_dir` may be empty)
  // and qtrain_build_info, read at each scrape. Call once, before serving.
  void TrackProcess(const std::string& data_dir);
  // Also report, at each scrape, per session (labels bounded by --max_sessions, dropped with
  // the session): queued operations and parameters, and their totals. `list` must stay valid
  // while the metrics are served. Call once, before serving.
  void TrackSessions(std::function<std::vector<engine::SessionInfo>()> list);
  // Stops reading the sessions (before they are destroyed).
  void UntrackSessions();

  // qtrain_cpu_info{cpu, detected_isa, active_isa} 1 and one qtrain_int8_kernel_info{op, kernel}
  // 1 per representative int8 op: which code paths this server computes with. Call once.
  void SetHardwareInfo(const v1::ServerInfo& info);

  // qtrain_memory_bytes{device, kind="budget"|"reserved"} follow each device's budget (not
  // owned; they must outlive the metrics' RPCs). Call once, before serving.
  void TrackMemory(const engine::DeviceBudgets* budgets);

  // The port the /metrics exposer listens on (0 when not serving).
  int port() const;

  // The text exposition format (what /metrics serves).
  std::string Serialize() const;

  // A server interceptor factory counting RPCs by method and status code and message bytes.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> InterceptorFactory();

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  prometheus::Family<prometheus::Counter>* steps_;
  prometheus::Family<prometheus::Counter>* samples_;
  prometheus::Family<prometheus::Histogram>* step_seconds_;
  qtrain::Mutex loss_mu_;  // SetLoss against ForgetSession
  prometheus::Family<prometheus::Gauge>* loss_;
  prometheus::Gauge* sessions_;
  prometheus::Family<prometheus::Counter>* rpcs_;
  prometheus::Counter* bytes_in_;
  prometheus::Counter* bytes_out_;
  prometheus::Family<prometheus::Histogram>* checkpoint_seconds_;
  prometheus::Family<prometheus::Counter>* checkpoint_bytes_;
  prometheus::Family<prometheus::Counter>* checkpoint_errors_;
  prometheus::Counter* allreduce_seconds_;
  prometheus::Counter* allreduce_exposed_seconds_;
  std::shared_ptr<prometheus::Collectable> process_;  // null until TrackProcess
  std::shared_ptr<SessionCollector> sessions_view_;   // null until TrackSessions
  prometheus::Family<prometheus::Histogram>* rpc_seconds_;
  prometheus::Family<prometheus::Gauge>* memory_;
  struct DeviceMemory {
    const engine::MemoryBudget* budget;
    prometheus::Gauge* limit;
    prometheus::Gauge* reserved;
  };
  std::vector<DeviceMemory> memory_by_device_;  // set once by TrackMemory
};

}  // namespace qtrain::rpc
