// The commands of `qtrain`: their words, positional arguments, the flags each accepts and their
// help. main.cc dispatches through the table and rejects what a command would ignore (a flag
// that does not apply, an extra argument), so that nothing on a command line is silently dropped.
#pragma once

#include <string>
#include <vector>

#include "client/cli/cli.h"

namespace qtrain::cli {

struct CommandSpec {
  std::string name;  // "checkpoint pull"
  std::string args;  // "ID FILE"
  size_t min_args = 0, max_args = 0;
  std::string help;                // what it does (a few lines)
  std::vector<std::string> flags;  // accepted besides the common --server, --json, --progress
  int (*run)(Invocation&) = nullptr;
};

const std::vector<CommandSpec>& CommandSpecs();

// `qtrain help`: every command of CommandSpecs() in one line or a few (command_table_test keeps
// the two in step), the data formats, the common flags and the exit codes.
const char* HelpIndex();

// The command named by `name`, or null.
const CommandSpec* FindCommand(const std::string& name);

// The commands whose first word is `group` ("session" → session create|get|list|delete).
std::vector<const CommandSpec*> CommandsInGroup(const std::string& group);

// "checkpoint pull ID FILE": the command's words and arguments.
std::string Usage(const CommandSpec& command);

// `text` word-wrapped at `width` columns, each line starting with `indent`.
std::string Wrap(const std::string& text, const std::string& indent, size_t width);

// `qtrain help COMMAND`: usage line, help and each accepted flag with its default and help.
std::string CommandHelp(const CommandSpec& command);

// Empty when every flag in `given` applies to `command`; else the usage message naming the first
// that does not.
std::string CheckCommandFlags(const CommandSpec& command, const std::vector<std::string>& given);

}  // namespace qtrain::cli
