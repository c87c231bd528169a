#include "server/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>

#include <nlohmann/json.hpp>

namespace qtrain::server {
namespace {

std::atomic<bool> g_json{false};

std::string UtcNow() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  return buf;
}

}  // namespace

void SetJsonLogs(bool json) { g_json = json; }

void LogEvent(LogLevel level, const std::string& event, const std::string& text,
              const std::vector<std::pair<std::string, std::string>>& fields) {
  FILE* out = level == LogLevel::kInfo ? stdout : stderr;
  std::string line;
  if (g_json) {
    nlohmann::json j;
    j["ts"] = UtcNow();
    j["level"] = level == LogLevel::kInfo      ? "info"
                 : level == LogLevel::kWarning ? "warning"
                                               : "error";
    j["event"] = event;
    // The text form continues "qtrain-server" with " ..." or ": ...".
    size_t start = text.rfind(": ", 0) == 0 ? 2 : (text.rfind(" ", 0) == 0 ? 1 : 0);
    j["msg"] = text.substr(start);
    for (const auto& [k, v] : fields) j[k] = v;
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = "qtrain-server" + text;
  }
  line += '\n';
  std::fwrite(line.data(), 1, line.size(), out);  // one write: lines from threads do not mix
  std::fflush(out);
}

}  // namespace qtrain::server
