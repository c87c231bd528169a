// Shared pieces of the `qtrain` command-line client: the invocation context, exit codes, error
// reporting and the JSON loading of configuration messages.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/data/dataset.h"
#include "nlohmann/json.hpp"
#include "qtrain/client.h"

namespace qtrain::cli {

// Exit codes scripts can rely on (documented in `qtrain --help` and docs/clients.md).
enum ExitCode : int {
  kOk = 0,
  kServerError = 1,        // any other error the server answered
  kUsage = 2,              // bad command line, or a local file that cannot be read
  kUnavailable = 3,        // the server cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED)
  kNotFound = 4,           // NOT_FOUND: no such session
  kAlreadyExists = 5,      // ALREADY_EXISTS: the session id is taken
  kRejected = 6,           // INVALID_ARGUMENT / FAILED_PRECONDITION / OUT_OF_RANGE
  kResourceExhausted = 7,  // RESOURCE_EXHAUSTED: a server limit (sessions, queue, sizes)
  kNotServing = 8,         // `health`: the server answered, but is not SERVING
  kDenied = 9,             // UNAUTHENTICATED / PERMISSION_DENIED: credentials or role
  kInterrupted = 130,      // Ctrl-C stopped a stream (after its summary); as shells report SIGINT
};

// One invocation: the connection, the output mode and the positional arguments after the command
// words (`qtrain session get ID` → args = {"ID"}).
struct Invocation {
  std::string command;             // "session get"
  std::vector<std::string> flags;  // the flags given on the command line, by name
  std::unique_ptr<client::Client> client;
  // Another server with the same credentials (qtrain rebalance talks to each replica).
  std::function<absl::StatusOr<std::unique_ptr<client::Client>>(const std::string& address)>
      connect;
  bool json = false;
  std::vector<std::string> args;
};

// The exit code for an error status the server (or the channel) returned.
int ExitCodeFor(const absl::Status& status);

// Reports a server error ("qtrain: <what>: NOT_FOUND: session ...", or a JSON object with --json)
// and returns its exit code.
int Fail(const Invocation& inv, const std::string& what, const absl::Status& status);
// Fail, with `partial`'s fields beside "error" in the JSON object (what was measured before).
int Fail(const Invocation& inv, const std::string& what, const absl::Status& status,
         const nlohmann::json& partial);

// Reports a usage or local-input error and returns kUsage.
int Usage(const Invocation& inv, const std::string& message);

// Prints a protobuf message as JSON (one object, fields in proto order).
void PrintJson(const google::protobuf::Message& message);

// Parses a message from inline JSON (text starting with '{') or from a JSON file's path.
// InvalidArgument names the flag, the file and the parser's complaint.
absl::Status LoadJsonMessage(const std::string& flag, const std::string& text_or_path,
                             google::protobuf::Message* out);

// --input_shape as dimensions (empty when unset).
absl::StatusOr<std::vector<int64_t>> InputShapeFromFlag();
// The builder-option flags of --arch (kArchOptionFlags, each under its torchvision name).
extern const char* const kArchOptionFlags[8];
// --arch_options=name=value,... and the kArchOptionFlags `inv` gives, as a map;
// InvalidArgument naming an item that is not name=number or an option given twice.
absl::StatusOr<std::map<std::string, double>> ArchOptionsFromFlags(const Invocation& inv);

// Token data labels each window with its own ids when the session's loss shifts labels (HF
// causal LMs) and with the next ids otherwise; stream commands set it from the session.
void SetLabelsAreInputs(bool v);
bool LabelsAreInputs();
// The pad id of the session the data is for (--sequences=lines pads with it); nullopt: none.
void SetSessionPadId(std::optional<int32_t> pad_id);

// The dataset the --data family of flags describes.
// `path` / `split` (non-empty) stand in for --data / --split.
absl::StatusOr<client::Dataset> LoadDataFromFlags(const std::string& path = "",
                                                  const std::string& split = "");

// "" when `dir` can take output files: it is a writable directory, or it does not exist and its
// parent is one (the command creates it). Else what is wrong, naming --`flag` and the path.
std::string CheckOutputDir(const std::string& flag, const std::string& dir);
// "" when `path` can be written as a file: not a directory, in a writable directory. Else what is
// wrong, naming --`flag` and the path.
std::string CheckOutputFile(const std::string& flag, const std::string& path);

// Whether --`flag` was given on the command line (not just left at its default).
bool Given(const Invocation& inv, const std::string& flag);

// Positional argument `i`, or "" when absent.
std::string Arg(const Invocation& inv, size_t i);

}  // namespace qtrain::cli
