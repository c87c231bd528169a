// Ctrl-C during a streaming command (train, eval, calibrate): the command stops sending batches,
// the steps in flight finish, the summary of what ran prints and the command exits 130. A second
// Ctrl-C at least a second later ends the process at once (timeout(1) sends its SIGINT twice, to
// the process and to its group, in the same instant).
//
// A process that inherits SIGINT ignored (nohup, a script's background job) keeps ignoring it.
// One guard at a time; it restores the previous handler when it goes out of scope.
#pragma once

#include "client/cli/cli.h"

namespace qtrain::cli {

class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;

  static bool interrupted();
  // kOk, or kInterrupted after telling the user that what ran is kept.
  static int ExitCode(const Invocation& inv);
  // Interrupted before the first batch went out: nothing ran, nothing to summarise.
  static int BeforeAnyBatch(const Invocation& inv, const char* command);

 private:
  void (*previous_)(int);
};

}  // namespace qtrain::cli
