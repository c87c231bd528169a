// qtrain: the command-line client of qtrain-server. `qtrain help` prints the commands.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/cli/command_table.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"

namespace {

constexpr char kHelp[] =
    R"(qtrain — command-line client of qtrain-server (quantized training over gRPC)

usage: qtrain COMMAND [ARGS] [--flags]      (qtrain help COMMAND: its flags)

commands:
  health                          is the server SERVING? (--service, --timeout=5)
  info                            the server's CPU, ISA level and int8 kernels (--verbose:
                                  every candidate kernel and why it was or was not chosen)
  session create [ID]             new session from --preset=mlp|cnn|transformer-lm or
                                  --model=SPEC (JSON file or inline JSON); --rules, --optimizer=
                                  adamw|sgd|momentum|JSON (--lr=0.001), --seed; mlp/cnn:
                                  --classes, --input_shape; transformer-lm: --seq_len
  session get ID                  the session: step, parameters, quantized ops and their rules
  session list                    all sessions
  session delete ID               delete a session (and its data on the server)
  import [ID] --weights=FILE      new session from --preset/--model and float weights trained
                                  elsewhere (safetensors, PyTorch naming; --map renames modules)
  export ID --out=DIR             int8 model.safetensors + config.json (compressed-tensors) of a
                                  calibrated session; --map names the layers
  rules set ID RULES              switch the rules between steps: float, qat-int8, qt-int8,
                                  srq-int8, qat-int4, a JSON file or inline JSON
  train ID --data=D               train for --epochs, or --steps batches (over as many passes
                                  as they need), of --batch_size;
                                  --rules=R switches the rules first
  eval ID --data=D                loss and accuracy (--update_stats also updates quant stats)
  calibrate ID --data=D           forward-only pass that collects SRQ statistics (ops under an
                                  act_static_scale rule), then the stats; --rules=srq-int8 first
  stats ID                        quant stats: counts, qtypes, derived static scales
  forward ID --data=D             outputs of the first --batch_size examples (argmax per row)
  checkpoint save ID              durable checkpoint on the server (its data dir)
  checkpoint pull ID FILE         download the session's checkpoint (safetensors)
  checkpoint push ID FILE         upload a checkpoint into session ID (created when new)
  token new --tenant=T            a bearer token and its entry for the server's access file
                                  (--role=admin|trainer|reader, --name); no server needed
  token hash                      the SHA-256 of a token read from standard input

data (--data):
  an IDX directory (--split=train|t10k), e.g. /usr/share/datasets/fashion-mnist; an IDX images
  file of any name (--labels, else derived from the name); FILE.csv[.gz] (--label_column,
  --targets=float for regression, --input_shape, --input_scale); any other file: text as byte
  tokens in windows of --seq_len. Gzip is read transparently. --limit=N keeps the first N
  examples. A flag the format does not read is an error.

common flags (every command):
  --server=HOST:PORT   default $QTRAIN_SERVER, else 127.0.0.1:50051
  --tls_ca=CA.pem      TLS (system: the system's roots); --tls_cert/--tls_key for mutual TLS;
                       default $QTRAIN_TLS_CA, $QTRAIN_TLS_CERT, $QTRAIN_TLS_KEY
  --token=T|@FILE      bearer token of a server with --auth_tokens (TLS only); $QTRAIN_TOKEN
  --json               machine-readable output (errors too: {"error": {...}})
  --progress=auto|bar|lines|none   (streams also take --log_every=N)

exit codes:
  0 ok   1 other server error   2 usage or local file error   3 server unreachable
  4 no such session   5 session exists   6 request rejected (invalid argument, failed
  precondition, out of range)   7 server limit reached   8 health: not serving
  9 unauthenticated or permission denied
  130 Ctrl-C stopped a stream (what ran is kept and summarised)
)";

// Unknown flags and bad `--flag=value`s are usage errors (exit 2); absl's parser would exit 1.
// Collects the names of the flags given into `given`.
int CheckFlags(int argc, char** argv, std::vector<std::string>* given) {
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
    given->emplace_back(name);
  }
  return 0;
}

// The command the first words name (the longest match: "session create" before "session"),
// and how many words it took.
std::pair<const qtrain::cli::CommandSpec*, size_t> Resolve(const std::vector<std::string>& words) {
  for (size_t n = std::min<size_t>(2, words.size()); n >= 1; --n) {
    const auto* c = qtrain::cli::FindCommand(absl::StrJoin(words.begin(), words.begin() + n, " "));
    if (c != nullptr) return {c, n};
  }
  return {nullptr, 0};
}

// "`qtrain session` needs a subcommand: create, get, ..." or "unknown command".
std::string UnknownCommand(const std::vector<std::string>& words) {
  std::vector<std::string> subcommands;
  for (const auto* c : qtrain::cli::CommandsInGroup(words[0])) {
    subcommands.push_back(c->name.substr(words[0].size() + 1));
  }
  if (!subcommands.empty()) {
    return absl::StrCat("`qtrain ", words[0],
                        "` needs a subcommand: ", absl::StrJoin(subcommands, ", "),
                        words.size() > 1 ? absl::StrCat(" (not \"", words[1], "\")") : "");
  }
  return absl::StrCat("unknown command \"", absl::StrJoin(words, " "), "\"");
}

// `qtrain help [COMMAND...]`: the overview, one command's help, or a group's commands.
int Help(const std::vector<std::string>& words) {
  if (words.empty() || (words.size() == 1 && words[0] == "help")) {
    std::fputs(kHelp, stdout);
    return 0;
  }
  if (auto [c, n] = Resolve(words); c != nullptr) {
    std::fputs(qtrain::cli::CommandHelp(*c).c_str(), stdout);
    return 0;
  }
  const auto group = qtrain::cli::CommandsInGroup(words[0]);
  if (group.empty()) {
    std::fprintf(stderr, "qtrain: USAGE: %s (see `qtrain help`)\n", UnknownCommand(words).c_str());
    return qtrain::cli::kUsage;
  }
  for (const auto* c : group) {
    std::printf("qtrain %s\n%s", qtrain::cli::Usage(*c).c_str(),
                qtrain::cli::Wrap(c->help, "    ", 80).c_str());
  }
  return 0;
}

}  // namespace

namespace {

// The flag, else the environment variable `env`.
std::string FlagOrEnv(const absl::Flag<std::string>& flag, const char* env) {
  std::string v = absl::GetFlag(flag);
  if (v.empty()) {
    const char* e = std::getenv(env);
    if (e != nullptr) v = e;
  }
  return v;
}

// A plaintext client, or TLS when --tls_ca (or $QTRAIN_TLS_CA) is set. InvalidArgument naming
// the flag for an unreadable file or a certificate without its key.
absl::StatusOr<std::unique_ptr<qtrain::client::Client>> ConnectFromFlags() {
  const std::string address = absl::GetFlag(FLAGS_server);
  const std::string ca = FlagOrEnv(FLAGS_tls_ca, "QTRAIN_TLS_CA");
  const std::string cert = FlagOrEnv(FLAGS_tls_cert, "QTRAIN_TLS_CERT");
  const std::string key = FlagOrEnv(FLAGS_tls_key, "QTRAIN_TLS_KEY");
  std::string token = FlagOrEnv(FLAGS_token, "QTRAIN_TOKEN");
  if (ca.empty()) {
    if (!cert.empty() || !key.empty() || !token.empty()) {
      return absl::InvalidArgumentError(
          "--tls_cert / --tls_key / --token need --tls_ca (or \"system\"): credentials never "
          "travel in plaintext");
    }
    return qtrain::client::Client::Connect(address);
  }
  if (cert.empty() != key.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  auto read = [](const char* flag, const std::string& path) -> absl::StatusOr<std::string> {
    std::ifstream in(path, std::ios::binary);
    std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in.good() && !in.eof()) pem.clear();
    if (pem.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, "=", path, ": cannot read it"));
    }
    return pem;
  };
  qtrain::client::TlsOptions tls;
  if (absl::StartsWith(token, "@")) {
    absl::StatusOr<std::string> t = read("token", token.substr(1));
    if (!t.ok()) return t.status();
    token = std::string(absl::StripAsciiWhitespace(*t));
  }
  tls.token = token;
  if (ca != "system") {
    absl::StatusOr<std::string> pem = read("tls_ca", ca);
    if (!pem.ok()) return pem.status();
    tls.ca = *pem;
  }
  if (!cert.empty()) {
    absl::StatusOr<std::string> c = read("tls_cert", cert);
    if (!c.ok()) return c.status();
    absl::StatusOr<std::string> k = read("tls_key", key);
    if (!k.ok()) return k.status();
    tls.cert = *c;
    tls.key = *k;
  }
  return qtrain::client::Client::ConnectTls(address, tls);
}

}  // namespace

int main(int argc, char** argv) {
  bool help = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--help") || !std::strcmp(argv[i], "-h")) help = true;
  }
  absl::SetProgramUsageMessage("command-line client of qtrain-server; see `qtrain help`");
  std::vector<std::string> given;
  std::vector<char*> kept;  // argv without --help / -h, which absl would handle itself
  for (int i = 0; i < argc; ++i) {
    if (i == 0 || (std::strcmp(argv[i], "--help") && std::strcmp(argv[i], "-h"))) {
      kept.push_back(argv[i]);
    }
  }
  const int kept_argc = static_cast<int>(kept.size());
  if (int rc = CheckFlags(kept_argc, kept.data(), &given); rc != 0) return rc;
  std::vector<char*> positional = absl::ParseCommandLine(kept_argc, kept.data());
  std::vector<std::string> words(positional.begin() + 1, positional.end());
  if (help) return Help(words);
  if (words.empty()) {
    std::fputs(kHelp, stderr);
    return qtrain::cli::kUsage;
  }
  if (words[0] == "help") return Help({words.begin() + 1, words.end()});
  if (absl::GetFlag(FLAGS_server).empty()) {
    const char* env = std::getenv("QTRAIN_SERVER");
    absl::SetFlag(&FLAGS_server, env != nullptr && *env ? env : "127.0.0.1:50051");
  }
  qtrain::cli::Invocation inv;
  inv.json = absl::GetFlag(FLAGS_json);
  const auto [command, n] = Resolve(words);
  if (command == nullptr) return qtrain::cli::Usage(inv, UnknownCommand(words));
  inv.command = command->name;
  inv.flags = given;
  inv.args.assign(words.begin() + n, words.end());
  if (inv.args.size() < command->min_args || inv.args.size() > command->max_args) {
    return qtrain::cli::Usage(
        inv, absl::StrCat("`qtrain ", command->name, "` takes ",
                          command->args.empty() ? "no arguments" : command->args, " (got: ",
                          inv.args.empty() ? "none" : absl::StrJoin(inv.args, " "), ")"));
  }
  if (std::string bad = qtrain::cli::CheckCommandFlags(*command, given); !bad.empty()) {
    return qtrain::cli::Usage(inv, bad);
  }
  absl::StatusOr<std::unique_ptr<qtrain::client::Client>> client = ConnectFromFlags();
  if (!client.ok()) return qtrain::cli::Usage(inv, std::string(client.status().message()));
  inv.client = *std::move(client);
  return command->run(inv);
}
