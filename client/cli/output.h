// Human-readable output of the `qtrain` client: a progress display for long streams and plain
// aligned tables. All output goes to stdout; errors go to stderr (cli.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

namespace qtrain::cli {

// Progress of a stream of `total` batches. Bar mode redraws one terminal line with a bar,
// steps/s, loss, accuracy and the time left; lines mode prints a plain line every `every`
// batches and at the end; none prints nothing (--json, --progress=none).
class Progress {
 public:
  enum class Mode { kBar, kLines, kNone };
  // `mode` is "auto" (bar when stdout is a terminal, else lines), "bar", "lines" or "none".
  static Mode ParseMode(const std::string& mode, bool json);

  Progress(std::string label, int64_t total, Mode mode, int64_t every);
  // Batch `done` (1-based) finished; loss / accuracy < 0 are not shown.
  void Update(int64_t done, double loss, double accuracy, const std::string& extra = "");
  // Ends the bar's line.
  void Finish();
  double seconds() const;

 private:
  std::string label_;
  int64_t total_;
  Mode mode_;
  int64_t every_;
  bool drawn_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

// A table printed with aligned columns (text) — the first row is the header.
class Table {
 public:
  explicit Table(std::vector<std::string> header) { rows_.push_back(std::move(header)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Compact number formatting for tables ("0.00784057", "1.2e-05").
std::string Num(double v);

}  // namespace qtrain::cli
