// Facts for /metrics read when Prometheus scrapes. ProcessCollector: resident memory, CPU time,
// open file descriptors (process_* conventions), the data dir's free bytes (the disk-filling
// alert) and build info. SessionCollector: each session's queue depth and parameters.
//
// Thread-safe (Collect reads /proc and statvfs only).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "kernels/sync.h"
#include "server/engine/session.h"

namespace qtrain::rpc {

class ProcessCollector final : public prometheus::Collectable {
 public:
  // `data_dir` may be empty (no data dir: no free-bytes gauge).
  ProcessCollector(std::string data_dir, std::string version)
      : data_dir_(std::move(data_dir)), version_(std::move(version)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const std::string data_dir_;
  const std::string version_;
};

// Sessions' queue depth and parameters, from SessionManager::List at each scrape.
// Detach() before the sessions go: the exposer's thread may scrape at any time.
class SessionCollector final : public prometheus::Collectable {
 public:
  explicit SessionCollector(std::function<std::vector<engine::SessionInfo>()> list)
      : list_(std::move(list)) {}
  std::vector<prometheus::MetricFamily> Collect() const override;
  void Detach();

 private:
  mutable qtrain::Mutex mu_;
  std::function<std::vector<engine::SessionInfo>()> list_ ABSL_GUARDED_BY(mu_);
};

}  // namespace qtrain::rpc
