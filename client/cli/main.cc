// qtrain: the command-line client of qtrain-server. `qtrain help` prints the commands.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"

namespace {

constexpr char kHelp[] =
    R"(qtrain — command-line client of qtrain-server (quantized training over gRPC)

usage: qtrain COMMAND [ARGS] [--flags]

commands:
  health                          is the server SERVING? (--service, --timeout=5)
  session create [ID]             new session from --preset=mlp|cnn|transformer-lm or
                                  --model=SPEC (JSON file or inline JSON); --rules, --optimizer
                                  (default AdamW --lr=0.001), --seed, --classes, --input_shape
  session get ID                  the session: step, parameters, quantized ops and their rules
  session list                    all sessions
  session delete ID               delete a session (and its data on the server)
  rules set ID RULES              switch the rules between steps: float, qat-int8, qt-int8,
                                  srq-int8, qat-int4, a JSON file or inline JSON
  train ID --data=D               train for --epochs, or --steps batches (over as many passes
                                  as they need), of --batch_size;
                                  --rules=R switches the rules first
  eval ID --data=D                loss and accuracy (--update_stats also updates quant stats)
  calibrate ID --data=D           forward-only pass that collects SRQ statistics, then the stats
  stats ID                        quant stats: counts, qtypes, derived static scales
  forward ID --data=D             outputs of the first --batch_size examples (argmax per row)
  checkpoint save ID              durable checkpoint on the server (its data dir)
  checkpoint pull ID FILE         download the session's checkpoint (safetensors)
  checkpoint push ID FILE         upload a checkpoint into session ID (created when new)

data (--data):
  an IDX directory (--split=train|t10k), e.g. /usr/share/datasets/fashion-mnist; an IDX images
  file (--labels, else derived from the name); FILE.csv[.gz] (--label_column, --input_shape,
  --input_scale); any other file: text as byte tokens in windows of --seq_len. Gzip is read
  transparently. --limit=N keeps the first N examples.

common flags:
  --server=HOST:PORT   default $QTRAIN_SERVER, else 127.0.0.1:50051
  --json               machine-readable output (errors too: {"error": {...}})
  --progress=auto|bar|lines|none, --log_every=N

exit codes:
  0 ok   1 other server error   2 usage or local file error   3 server unreachable
  4 no such session   5 session exists   6 request rejected (invalid argument, failed
  precondition, out of range)   7 server limit reached   8 health: not serving
)";

using Command = std::function<int(qtrain::cli::Invocation&)>;

const std::map<std::string, Command>& Commands() {
  namespace c = qtrain::cli;
  static const auto* commands = new std::map<std::string, Command>{
      {"health", c::Health},
      {"session create", c::SessionCreate},
      {"session get", c::SessionGet},
      {"session list", c::SessionList},
      {"session delete", c::SessionDelete},
      {"rules set", c::RulesSet},
      {"train", c::Train},
      {"eval", c::Eval},
      {"calibrate", c::Calibrate},
      {"stats", c::Stats},
      {"forward", c::Forward},
      {"checkpoint save", c::CheckpointSave},
      {"checkpoint pull", c::CheckpointPull},
      {"checkpoint push", c::CheckpointPush},
  };
  return *commands;
}

// Unknown flags and bad `--flag=value`s are usage errors (exit 2); absl's parser would exit 1.
int CheckFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) continue;
    if (arg.empty()) continue;
    const size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::ConsumePrefix(&name, "no")) {
      flag = absl::FindCommandLineFlag(name);  // --noshuffle
    }
    std::string error;
    if (flag == nullptr) {
      error = absl::StrCat("unknown flag --", arg.substr(0, eq));
    } else if (eq != absl::string_view::npos) {
      if (!flag->ParseFrom(arg.substr(eq + 1), &error))
        error = absl::StrCat("--", arg, ": ", error);
    } else if (!flag->IsOfType<bool>()) {
      ++i;  // "--flag value": the next word is the value (absl's parser checks it)
    }
    if (!error.empty()) {
      std::fprintf(stderr, "qtrain: USAGE: %s (see `qtrain help`)\n", error.c_str());
      return qtrain::cli::kUsage;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) {
      std::fputs(kHelp, stdout);
      return 0;
    }
  }
  absl::SetProgramUsageMessage("command-line client of qtrain-server; see `qtrain help`");
  if (int rc = CheckFlags(argc, argv); rc != 0) return rc;
  std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  std::vector<std::string> words(positional.begin() + 1, positional.end());
  if (words.empty() || words[0] == "help") {
    std::fputs(kHelp, words.empty() ? stderr : stdout);
    return words.empty() ? qtrain::cli::kUsage : 0;
  }
  if (absl::GetFlag(FLAGS_server).empty()) {
    const char* env = std::getenv("QTRAIN_SERVER");
    absl::SetFlag(&FLAGS_server, env != nullptr && *env ? env : "127.0.0.1:50051");
  }
  qtrain::cli::Invocation inv;
  inv.json = absl::GetFlag(FLAGS_json);
  // The longest command that matches the first words ("session create" before "session").
  for (size_t n = std::min<size_t>(2, words.size()); n >= 1; --n) {
    auto it = Commands().find(absl::StrJoin(words.begin(), words.begin() + n, " "));
    if (it == Commands().end()) continue;
    inv.args.assign(words.begin() + n, words.end());
    inv.client = qtrain::client::Client::Connect(absl::GetFlag(FLAGS_server));
    return it->second(inv);
  }
  return qtrain::cli::Usage(inv,
                            absl::StrCat("unknown command \"", absl::StrJoin(words, " "), "\""));
}
