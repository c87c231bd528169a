#include "server/rpc/process_metrics.h"

#include <dirent.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>

#include "server/engine/session_id.h"

namespace qtrain::rpc {
namespace {

prometheus::MetricFamily Gauge(const char* name, const char* help, double value,
                               prometheus::MetricType type = prometheus::MetricType::Gauge) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = type;
  prometheus::ClientMetric m;
  if (type == prometheus::MetricType::Counter) {
    m.counter.value = value;
  } else {
    m.gauge.value = value;
  }
  f.metric.push_back(m);
  return f;
}

// Fields 14 and 15 of /proc/self/stat (utime, stime) in seconds; -1 when unreadable.
double CpuSeconds() {
  std::ifstream in("/proc/self/stat");
  std::string line;
  if (!std::getline(in, line)) return -1;
  const size_t paren = line.rfind(')');  // the command name may hold spaces
  if (paren == std::string::npos) return -1;
  std::istringstream rest(line.substr(paren + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  long pages = 0, resident = 0;
  if (!(in >> pages >> resident)) return -1;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE));
}

double OpenFds() {
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  double n = 0;
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the descriptor opendir itself holds
}

}  // namespace

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  out.push_back(
      Gauge("process_resident_memory_bytes", "Resident memory size in bytes", ResidentBytes()));
  out.push_back(Gauge("process_cpu_seconds_total", "User and system CPU time in seconds",
                      CpuSeconds(), prometheus::MetricType::Counter));
  out.push_back(Gauge("process_open_fds", "Open file descriptors", OpenFds()));
  out.push_back(Gauge("process_max_fds", "Largest file descriptor the process may open",
                      static_cast<double>(sysconf(_SC_OPEN_MAX))));
  if (!data_dir_.empty()) {
    struct statvfs fs;
    if (statvfs(data_dir_.c_str(), &fs) == 0) {
      out.push_back(Gauge("qtrain_data_dir_free_bytes",
                          "Bytes available to the server on the data dir's file system",
                          static_cast<double>(fs.f_bavail) * static_cast<double>(fs.f_frsize)));
      out.push_back(Gauge("qtrain_data_dir_size_bytes", "Size of the data dir's file system",
                          static_cast<double>(fs.f_blocks) * static_cast<double>(fs.f_frsize)));
    }
  }
  prometheus::MetricFamily build =
      Gauge("qtrain_build_info", "The qtrain-server version (value 1)", 1);
  build.metric[0].label.push_back({"version", version_});
  out.push_back(build);
  return out;
}

void SessionCollector::Detach() {
  qtrain::MutexLock lock(&mu_);
  list_ = nullptr;
}

namespace {

// An empty gauge family, and one sample of it.
prometheus::MetricFamily GaugeFamily(const char* name, const char* help) {
  prometheus::MetricFamily f = Gauge(name, help, 0);
  f.metric.clear();
  return f;
}
void AddSample(prometheus::MetricFamily& f, std::vector<prometheus::ClientMetric::Label> labels,
               double value) {
  prometheus::ClientMetric m;
  m.label = std::move(labels);
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<prometheus::MetricFamily> SessionCollector::Collect() const {
  std::vector<engine::SessionInfo> sessions;
  {
    qtrain::MutexLock lock(&mu_);
    if (!list_) return {};
    sessions = list_();
  }
  prometheus::MetricFamily queued =
      GaugeFamily("qtrain_session_queued_operations", "Operations waiting on a session's executor");
  prometheus::MetricFamily params =
      GaugeFamily("qtrain_session_parameters", "Parameters of a session's model");
  double total = 0;
  std::map<std::string, std::pair<double, double>> tenants;  // sessions, parameters
  for (const engine::SessionInfo& info : sessions) {
    const std::string tenant(engine::TenantOf(info.id));
    std::vector<prometheus::ClientMetric::Label> labels = {{"session", info.id}};
    if (!tenant.empty()) labels.push_back({"tenant", tenant});
    AddSample(queued, labels, static_cast<double>(info.queued));
    AddSample(params, labels, static_cast<double>(info.parameters));
    total += static_cast<double>(info.parameters);
    if (!tenant.empty()) {
      ++tenants[tenant].first;
      tenants[tenant].second += static_cast<double>(info.parameters);
    }
  }
  std::vector<prometheus::MetricFamily> out{queued, params};
  if (!tenants.empty()) {  // servers with authentication: what the tenants' quotas count
    prometheus::MetricFamily tenant_sessions =
        GaugeFamily("qtrain_tenant_sessions", "Sessions of a tenant");
    prometheus::MetricFamily tenant_params =
        GaugeFamily("qtrain_tenant_parameters", "Parameters over a tenant's sessions");
    for (const auto& [tenant, use] : tenants) {
      AddSample(tenant_sessions, {{"tenant", tenant}}, use.first);
      AddSample(tenant_params, {{"tenant", tenant}}, use.second);
    }
    out.push_back(std::move(tenant_sessions));
    out.push_back(std::move(tenant_params));
  }
  out.push_back(Gauge("qtrain_parameters_resident", "Parameters of every hosted session", total));
  return out;
}

}  // namespace qtrain::rpc
