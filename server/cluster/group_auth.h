// How the servers of one deployment recognise each other when forming data-parallel groups:
// every proof is an HMAC-SHA256 under the cluster secret (--dp_secret_file, the same file on
// every server), which never travels. A JoinGroup call proves the caller leads with it; each
// rank, once connected, proves to the leader that it was invited (the rendezvous store's keys are
// readable by whoever can reach the store). docs/security.md has the threat model.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace qtrain::cluster {

// A new group's id: 32 random hex digits (OpenSSL's RAND_bytes).
absl::StatusOr<std::string> NewGroupId();
// What the leader presents in JoinGroup, hex.
std::string JoinProof(absl::string_view secret, absl::string_view group_id, int rank,
                      int world_size);
// What rank `rank` sends the leader once connected (raw 32 bytes).
std::string RankProof(absl::string_view secret, absl::string_view group_id, int rank);
// Constant-time comparison.
bool ProofEquals(absl::string_view a, absl::string_view b);

}  // namespace qtrain::cluster
