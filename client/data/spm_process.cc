// SentencePiece through the qtrain-spm helper process (why: spm_main.cc).
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/data/dataset.h"

extern char** environ;

namespace qtrain::client {
namespace {

// $QTRAIN_SPM, else qtrain-spm beside this executable, else the bare name for a PATH lookup.
std::string HelperPath() {
  if (const char* env = std::getenv("QTRAIN_SPM"); env != nullptr && *env != '\0') return env;
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto beside = self.parent_path() / "qtrain-spm";
    if (std::filesystem::exists(beside, ec)) return beside.string();
  }
  return "qtrain-spm";
}

}  // namespace

absl::StatusOr<std::string> RunSpmHelper(const std::vector<std::string>& args) {
  const std::string helper = HelperPath();
  std::vector<std::string> argv_strings = {helper};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  pid_t pid = 0;
  const int spawned = posix_spawnp(&pid, helper.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    return absl::FailedPreconditionError(
        absl::StrCat("cannot run the SentencePiece helper ", helper, ": ", std::strerror(spawned),
                     " (it is built beside qtrain; set QTRAIN_SPM to its path)"));
  }
  std::string output;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(out[0], buf, sizeof(buf));
    if (n > 0) {
      output.append(buf, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(out[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return output;
  const std::string why = WIFEXITED(status)
                              ? absl::StrCat("exit ", WEXITSTATUS(status))
                              : absl::StrCat("signal ", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
  return absl::InvalidArgumentError(
      absl::StrCat(helper, " ", absl::StrJoin(args, " "), " failed (", why, "): ", output));
}

namespace {

// The helper's int32 output for `command` ("encode" or "encode_lines") of `path`.
absl::StatusOr<std::vector<int32_t>> RunEncode(const char* command, const std::string& path,
                                               const std::string& model_path) {
  auto out = RunSpmHelper({command, model_path, path});
  if (!out.ok()) {
    if (!absl::IsInvalidArgument(out.status())) return out.status();
    return absl::InvalidArgumentError(
        absl::StrCat("--tokenizer=", model_path,
                     " is not a SentencePiece model or failed: ", out.status().message()));
  }
  if (out->size() % 4 != 0) {
    return absl::InternalError(
        absl::StrCat("qtrain-spm wrote ", out->size(), " bytes, not a whole number of int32 ids"));
  }
  std::vector<int32_t> ids(out->size() / 4);
  std::memcpy(ids.data(), out->data(), out->size());  // little-endian, as x86-64
  return ids;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> EncodeSentencePiece(const std::string& path,
                                                         const std::string& model_path) {
  return RunEncode("encode", path, model_path);
}

absl::StatusOr<std::vector<std::vector<int32_t>>> EncodeSentencePieceLines(
    const std::string& path, const std::string& model_path) {
  auto words = RunEncode("encode_lines", path, model_path);
  if (!words.ok()) return words.status();
  // Per line: its id count, then its ids.
  std::vector<std::vector<int32_t>> lines;
  for (size_t i = 0; i < words->size();) {
    const auto count = static_cast<size_t>(static_cast<uint32_t>((*words)[i++]));
    if (count > words->size() - i) {
      return absl::InternalError(absl::StrCat("qtrain-spm encode_lines: line ", lines.size() + 1,
                                              " claims ", count, " ids past the end"));
    }
    lines.emplace_back(words->begin() + static_cast<int64_t>(i),
                       words->begin() + static_cast<int64_t>(i + count));
    i += count;
  }
  return lines;
}

}  // namespace qtrain::client
