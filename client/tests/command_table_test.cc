// `qtrain help` lists every command of the command table and nothing else, and every flag a
// command accepts exists: the help index is written by hand, so this keeps the two in step.
#include <set>
#include <sstream>
#include <string>

#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "client/cli/command_table.h"
#include "gtest/gtest.h"

namespace qtrain::cli {
namespace {

// The commands the index's "commands:" section names: each entry starts at column 2 with the
// command's words; the longest prefix of them that is a table command is taken.
std::set<std::string> IndexedCommands() {
  std::set<std::string> out;
  std::istringstream in(HelpIndex());
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    if (line == "commands:") {
      in_section = true;
      continue;
    }
    if (!in_section) continue;
    if (line.empty()) break;
    if (!absl::StartsWith(line, "  ") || line[2] == ' ') continue;  // a continuation line
    std::vector<std::string> words = absl::StrSplit(line.substr(2), ' ', absl::SkipEmpty());
    std::string found;
    for (size_t n = 1; n <= std::min<size_t>(2, words.size()); ++n) {
      std::string name = words[0];
      for (size_t i = 1; i < n; ++i) name += " " + words[i];
      if (FindCommand(name) != nullptr) found = name;
    }
    EXPECT_FALSE(found.empty()) << "the help index names an unknown command: " << line;
    if (!found.empty()) out.insert(found);
  }
  return out;
}

TEST(CommandTableTest, HelpIndexListsEveryCommandOnce) {
  const std::set<std::string> indexed = IndexedCommands();
  std::set<std::string> table;
  for (const CommandSpec& c : CommandSpecs()) {
    EXPECT_TRUE(table.insert(c.name).second) << "twice in the table: " << c.name;
    EXPECT_TRUE(indexed.count(c.name)) << "`qtrain help` does not list `" << c.name << "`";
  }
  EXPECT_EQ(indexed.size(), table.size());
  EXPECT_TRUE(indexed.count("ptq"));
  EXPECT_TRUE(indexed.count("sensitivity"));
}

TEST(CommandTableTest, EveryAcceptedFlagExistsAndHasHelp) {
  for (const CommandSpec& c : CommandSpecs()) {
    EXPECT_FALSE(c.help.empty()) << c.name;
    EXPECT_NE(c.run, nullptr) << c.name;
    for (const std::string& flag : c.flags) {
      const absl::CommandLineFlag* f = absl::FindCommandLineFlag(flag);
      ASSERT_NE(f, nullptr) << c.name << " accepts --" << flag << ", which is not defined";
      EXPECT_FALSE(f->Help().empty()) << "--" << flag;
    }
    EXPECT_TRUE(absl::StrContains(CommandHelp(c), "usage: qtrain " + c.name)) << c.name;
  }
}

TEST(CommandTableTest, ForeignFlagIsNamed) {
  const CommandSpec* stats = FindCommand("stats");
  ASSERT_NE(stats, nullptr);
  EXPECT_EQ(CheckCommandFlags(*stats, {"json", "server"}), "");
  EXPECT_TRUE(absl::StrContains(CheckCommandFlags(*stats, {"epochs"}), "--epochs does not apply"));
}

}  // namespace
}  // namespace qtrain::cli
