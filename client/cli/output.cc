#include "client/cli/output.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace qtrain::cli {

Progress::Mode Progress::ParseMode(const std::string& mode, bool json) {
  if (json || mode == "none") return Mode::kNone;
  if (mode == "bar") return Mode::kBar;
  if (mode == "lines") return Mode::kLines;
  return isatty(STDOUT_FILENO) ? Mode::kBar : Mode::kLines;
}

Progress::Progress(std::string label, int64_t total, Mode mode, int64_t every)
    : label_(std::move(label)),
      total_(total),
      mode_(mode),
      every_(every > 0 ? every : std::max<int64_t>(1, (total + 9) / 10)),
      start_(std::chrono::steady_clock::now()) {}

double Progress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::Update(int64_t done, double loss, double accuracy, const std::string& extra) {
  if (mode_ == Mode::kNone) return;
  const auto now = std::chrono::steady_clock::now();
  const bool last = done >= total_;
  if (mode_ == Mode::kLines && done % every_ != 0 && !last) return;
  // A terminal redraw at most every 100 ms keeps the client's cost negligible.
  if (mode_ == Mode::kBar && !last && drawn_ && now - last_draw_ < std::chrono::milliseconds(100)) {
    return;
  }
  last_draw_ = now;
  const double secs = seconds();
  const double rate = secs > 0 ? done / secs : 0;
  std::string stats = absl::StrFormat("%6.1f steps/s", rate);
  if (loss >= 0) absl::StrAppendFormat(&stats, "  loss %.4f", loss);
  if (accuracy >= 0) absl::StrAppendFormat(&stats, "  acc %.3f", accuracy);
  if (!extra.empty()) absl::StrAppend(&stats, "  ", extra);
  const int width = static_cast<int>(std::to_string(total_).size());
  if (mode_ == Mode::kLines) {
    std::printf("%s %*lld/%lld  %s\n", label_.c_str(), width, static_cast<long long>(done),
                static_cast<long long>(total_), stats.c_str());
  } else {
    constexpr int kBar = 24;
    const int filled = total_ > 0 ? static_cast<int>(kBar * std::min(done, total_) / total_) : 0;
    const double eta = rate > 0 ? (total_ - done) / rate : 0;
    std::printf("\r%s [%s%s] %*lld/%lld  %s  eta %.0fs\x1b[K", label_.c_str(),
                std::string(filled, '#').c_str(), std::string(kBar - filled, '.').c_str(), width,
                static_cast<long long>(done), static_cast<long long>(total_), stats.c_str(), eta);
    drawn_ = true;
  }
  std::fflush(stdout);
}

void Progress::Finish() {
  if (mode_ == Mode::kBar && drawn_) std::printf("\n");
  drawn_ = false;
}

void Table::Print() const {
  std::vector<size_t> width;
  for (const auto& row : rows_) {
    width.resize(std::max(width.size(), row.size()));
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      absl::StrAppend(&line, row[i],
                      i + 1 < row.size() ? std::string(width[i] - row[i].size() + 2, ' ') : "");
    }
    std::printf("%s\n", line.c_str());
  }
}

std::string Num(double v) { return absl::StrFormat("%.6g", v); }

}  // namespace qtrain::cli
