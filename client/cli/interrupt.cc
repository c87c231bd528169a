#include "client/cli/interrupt.h"

#include <time.h>

#include <atomic>
#include <csignal>
#include <cstdio>

#include "nlohmann/json.hpp"

namespace qtrain::cli {
namespace {

std::atomic<bool> g_interrupted{false};
std::atomic<int64_t> g_first_ns{0};  // CLOCK_MONOTONIC of the first interrupt
static_assert(std::atomic<bool>::is_always_lock_free, "used from a signal handler");
static_assert(std::atomic<int64_t>::is_always_lock_free, "used from a signal handler");

int64_t MonotonicNs() {  // clock_gettime is async-signal-safe
  timespec t{};
  clock_gettime(CLOCK_MONOTONIC, &t);
  return int64_t{t.tv_sec} * 1000000000 + t.tv_nsec;
}

extern "C" void OnInterrupt(int) {
  const int64_t now = MonotonicNs();
  if (!g_interrupted.exchange(true)) {
    g_first_ns = now;
    return;
  }
  if (now - g_first_ns >= 1000000000) {  // a second, deliberate Ctrl-C
    std::signal(SIGINT, SIG_DFL);
    std::raise(SIGINT);
  }
}

}  // namespace

InterruptGuard::InterruptGuard() {
  g_interrupted = false;
  previous_ = std::signal(SIGINT, OnInterrupt);
  if (previous_ == SIG_IGN) std::signal(SIGINT, SIG_IGN);
}

InterruptGuard::~InterruptGuard() { std::signal(SIGINT, previous_); }

bool InterruptGuard::interrupted() { return g_interrupted; }

int InterruptGuard::ExitCode(const Invocation& inv) {
  if (!interrupted()) return kOk;
  if (!inv.json) std::fprintf(stderr, "qtrain: interrupted; the steps that ran are kept\n");
  return kInterrupted;
}

int InterruptGuard::BeforeAnyBatch(const Invocation& inv, const char* command) {
  if (inv.json) {
    std::printf("%s\n", nlohmann::json({{"interrupted", true}, {"batches", 0}}).dump().c_str());
  }
  std::fprintf(stderr, "qtrain: %s interrupted before any batch was sent\n", command);
  return kInterrupted;
}

}  // namespace qtrain::cli
