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
    std::fputs(qtrain::cli::HelpIndex(), stdout);
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
// A client of `address` with the TLS and token flags.
absl::StatusOr<std::unique_ptr<qtrain::client::Client>> ConnectFromFlags(
    const std::string& address) {
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
    std::fputs(qtrain::cli::HelpIndex(), stderr);
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
  absl::StatusOr<std::unique_ptr<qtrain::client::Client>> client =
      ConnectFromFlags(absl::GetFlag(FLAGS_server));
  inv.connect = ConnectFromFlags;
  if (!client.ok()) return qtrain::cli::Usage(inv, std::string(client.status().message()));
  inv.client = *std::move(client);
  return command->run(inv);
}
