#include "server/cluster/group_auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace qtrain::cluster {
namespace {

std::string Hmac(absl::string_view secret, const std::string& message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

}  // namespace

absl::StatusOr<std::string> NewGroupId() {
  unsigned char random[16];
  if (RAND_bytes(random, sizeof random) != 1) {
    return absl::InternalError("OpenSSL's RAND_bytes failed: no group id");
  }
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(random), sizeof random));
}

std::string JoinProof(absl::string_view secret, absl::string_view group_id, int rank,
                      int world_size) {
  return absl::BytesToHexString(
      Hmac(secret, absl::StrCat("join:", group_id, ":", rank, ":", world_size)));
}

std::string RankProof(absl::string_view secret, absl::string_view group_id, int rank) {
  return Hmac(secret, absl::StrCat("rank:", group_id, ":", rank));
}

bool ProofEquals(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace qtrain::cluster
