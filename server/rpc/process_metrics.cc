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

std::vector<prometheus::MetricFamily> SessionCollector::Collect() const {
  prometheus::MetricFamily queued =
      Gauge("qtrain_session_queued_operations", "Operations waiting on a session's executor", 0);
  prometheus::MetricFamily params =
      Gauge("qtrain_session_parameters", "Parameters of a session's model", 0);
  queued.metric.clear();
  params.metric.clear();
  std::vector<engine::SessionInfo> sessions;
  {
    qtrain::MutexLock lock(&mu_);
    if (!list_) return {};
    sessions = list_();
  }
  double total = 0;
  std::map<std::string, std::pair<double, double>> tenants;  // sessions, parameters
  for (const engine::SessionInfo& info : sessions) {
    prometheus::ClientMetric q, p;
    const std::string tenant(engine::TenantOf(info.id));
    q.label.push_back({"session", info.id});
    if (!tenant.empty()) q.label.push_back({"tenant", tenant});
    q.gauge.value = static_cast<double>(info.queued);
    p.label = q.label;
    p.gauge.value = static_cast<double>(info.parameters);
    total += p.gauge.value;
    queued.metric.push_back(q);
    params.metric.push_back(p);
    if (!tenant.empty()) {
      ++tenants[tenant].first;
      tenants[tenant].second += p.gauge.value;
    }
  }
  // Per tenant (servers with authentication): what its quotas count.
  prometheus::MetricFamily tenant_sessions =
      Gauge("qtrain_tenant_sessions", "Sessions of a tenant", 0);
  prometheus::MetricFamily tenant_params =
      Gauge("qtrain_tenant_parameters", "Parameters over a tenant's sessions", 0);
  tenant_sessions.metric.clear();
  tenant_params.metric.clear();
  for (const auto& [tenant, use] : tenants) {
    prometheus::ClientMetric n, p;
    n.label.push_back({"tenant", tenant});
    n.gauge.value = use.first;
    p.label = n.label;
    p.gauge.value = use.second;
    tenant_sessions.metric.push_back(n);
    tenant_params.metric.push_back(p);
  }
  std::vector<prometheus::MetricFamily> out{queued, params};
  if (!tenants.empty()) {
    out.push_back(tenant_sessions);
    out.push_back(tenant_params);
  }
  out.push_back(Gauge("qtrain_parameters_resident", "Parameters of every hosted session", total));
  return out;
}

}  // namespace qtrain::rpc
