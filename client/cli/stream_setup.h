// The shared start of the streaming commands (train, eval, calibrate, forward): flag checks,
// loading --data, the optional --rules switch, and the helpers their results use.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "client/cli/cli.h"
#include "client/data/dataset.h"

namespace qtrain::cli {

// The session id and the dataset of a streaming command, or the exit code of a usage error.
struct StreamSetup {
  std::string session;
  client::Dataset data;
  int exit_code = kOk;
};

// Checks the command's flags, loads --data (text windows default to the session's sequence
// length), prints the "data:" line and applies --rules. A usage or server error, or a Ctrl-C
// while the data loaded (under the caller's InterruptGuard), is reported and its exit code
// returned in `exit_code`.
// `apply_rules` false: --rules means something else to the command (sensitivity).
StreamSetup Setup(Invocation& inv, const char* command, bool need_labels, bool apply_rules = true);

// `s` with a hint when the server rejected a CSV's targets for not fitting the model.
absl::Status WithTargetsHint(const Invocation& inv, const client::Dataset& data, absl::Status s);

// Batches of --batch_size over the setup's data (shuffled per --shuffle / --seed) for `epochs`
// passes, or for --steps batches when it is set, over as many passes as they need.
client::BatchIterator StepBatches(const StreamSetup& setup, int epochs);

}  // namespace qtrain::cli
