// The server's event log: one line per event, as text for people ("qtrain-server ...", the
// default) or as one JSON object per line for log pipelines (--log_format=json):
//   {"ts":"2026-11-30T07:00:00.123Z","level":"info","event":"listening","msg":"...","port":50051}
// Info goes to stdout, warnings and errors to stderr. Messages never carry request payloads,
// tensors or credentials. Thread-safe; SetJsonLogs before the first event.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace qtrain::server {

enum class LogLevel { kInfo, kWarning, kError };

void SetJsonLogs(bool json);

// `text` is the human line (printed after "qtrain-server"); `fields` are extra JSON members.
void LogEvent(LogLevel level, const std::string& event, const std::string& text,
              const std::vector<std::pair<std::string, std::string>>& fields = {});

}  // namespace qtrain::server
