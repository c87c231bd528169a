// `qtrain token new` / `qtrain token hash`: bearer tokens and the access-file entries that grant
// them (the server stores only SHA-256 hashes: server/rpc/access.h). No server is contacted.
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstdio>
#include <iostream>
#include <iterator>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"
#include "nlohmann/json.hpp"

namespace qtrain::cli {
namespace {

std::string Sha256Hex(const std::string& text) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

bool ValidTenant(const std::string& t) {
  if (t.empty() || t.size() > 64) return false;
  for (char c : t) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-') return false;
  }
  return true;
}

}  // namespace

int TokenNew(Invocation& inv) {
  const std::string tenant = absl::GetFlag(FLAGS_tenant);
  const std::string role = absl::GetFlag(FLAGS_role);
  if (!ValidTenant(tenant)) {
    return Usage(inv, absl::StrCat("--tenant=", tenant, " must be 1 to 64 of [A-Za-z0-9_-]"));
  }
  if (role != "admin" && role != "trainer" && role != "reader") {
    return Usage(inv, absl::StrCat("--role=", role, " must be admin, trainer or reader"));
  }
  unsigned char random[32];  // 256 bits from the OS's generator
  if (RAND_bytes(random, sizeof random) != 1) {
    return Usage(inv, "no random bytes from OpenSSL's generator");
  }
  const std::string token =
      absl::StrCat("qt_", absl::WebSafeBase64Escape(absl::string_view(
                              reinterpret_cast<const char*>(random), sizeof random)));
  nlohmann::json entry = {{"sha256", Sha256Hex(token)}, {"tenant", tenant}, {"role", role}};
  if (!absl::GetFlag(FLAGS_name).empty()) entry["name"] = absl::GetFlag(FLAGS_name);
  if (inv.json) {
    std::cout << nlohmann::json{{"token", token}, {"entry", entry}}.dump() << "\n";
  } else {
    std::cout << "token: " << token << "\n"
              << "entry: " << entry.dump() << "\n\n"
              << "Add the entry to the \"tokens\" list of the server's --auth_tokens file (it is "
                 "re-read within a second).\nGive the token to its holder (QTRAIN_TOKEN); it is "
                 "shown only now.\n";
  }
  return 0;
}

int TokenHash(Invocation& inv) {
  std::string token((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  token = std::string(absl::StripAsciiWhitespace(token));
  if (token.empty()) return Usage(inv, "no token on standard input");
  if (inv.json) {
    std::cout << nlohmann::json{{"sha256", Sha256Hex(token)}}.dump() << "\n";
  } else {
    std::cout << Sha256Hex(token) << "\n";
  }
  return 0;
}

}  // namespace qtrain::cli
