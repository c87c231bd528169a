// Process and host facts for /metrics, read when Prometheus scrapes: resident memory, CPU time,
// open file descriptors, the data dir's free bytes (the disk-filling alert) and build info.
// Names follow Prometheus' process_* conventions.
//
// Thread-safe (Collect reads /proc and statvfs only).
#pragma once

#include <string>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

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

}  // namespace qtrain::rpc
