// qtrain rebalance --replicas=A,B,...: after the replica count behind a routing proxy changed,
// moves every session to the replica the proxy (--server) now routes it to (docs/scaling.md,
// "Many sessions over many replicas"). A move downloads the checkpoint from the old replica,
// uploads it into the new one, checks the step, and only then deletes the old copy: a failure
// anywhere leaves the session where it was. A session that exists on both replicas is reported
// and left alone.
#include <unistd.h>

#include <cstdio>
#include <map>
#include <set>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "client/cli/commands.h"
#include "client/cli/flags.h"

namespace qtrain::cli {
namespace {

struct Replica {
  std::string address;
  std::string name;  // ServerInfo.replica
  std::unique_ptr<client::Client> client;
};

// Moves `id` (at `step`) from `from` to `to`. On error the session stays on `from`.
absl::Status Move(const std::string& id, int64_t step, Replica& from, Replica& to) {
  if (to.client->GetSession(id).ok()) {
    return absl::AlreadyExistsError(absl::StrCat("session ", id, " exists on both ", from.name,
                                                 " and ", to.name,
                                                 ": left alone, resolve it "
                                                 "by hand"));
  }
  char path[] = "/tmp/qtrain-rebalance-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return absl::InternalError("cannot create a temporary file in /tmp");
  close(fd);
  absl::Status s = from.client->DownloadCheckpoint(id, path).status();
  if (s.ok()) s = to.client->UploadCheckpoint(id, path).status();
  if (s.ok()) {
    absl::StatusOr<v1::Session> moved = to.client->GetSession(id);
    if (!moved.ok()) {
      s = moved.status();
    } else if (moved->step() != step) {
      s = absl::DataLossError(absl::StrCat("session ", id, " arrived on ", to.name, " at step ",
                                           moved->step(), ", not ", step));
    }
  }
  if (s.ok()) s = from.client->DeleteSession(id);
  unlink(path);
  return s;
}

}  // namespace

int Rebalance(Invocation& inv) {
  std::vector<Replica> replicas;
  std::set<std::string> names;
  for (absl::string_view a :
       absl::StrSplit(absl::GetFlag(FLAGS_replicas), ',', absl::SkipEmpty())) {
    Replica r;
    r.address = std::string(absl::StripAsciiWhitespace(a));
    absl::StatusOr<std::unique_ptr<client::Client>> c = inv.connect(r.address);
    if (!c.ok()) return Usage(inv, std::string(c.status().message()));
    r.client = *std::move(c);
    absl::StatusOr<v1::ServerInfo> info = r.client->GetServerInfo();
    if (!info.ok()) return Fail(inv, absl::StrCat("rebalance: replica ", r.address), info.status());
    r.name = info->replica();
    if (r.name.empty() || !names.insert(r.name).second) {
      return Usage(inv, absl::StrCat("replica ", r.address, " names itself \"", r.name,
                                     "\": every replica needs its own --replica_name"));
    }
    replicas.push_back(std::move(r));
  }
  if (replicas.empty()) return Usage(inv, "--replicas: the replicas' own addresses, A,B,...");
  std::map<std::string, Replica*> by_name;
  for (Replica& r : replicas) by_name[r.name] = &r;
  int moved = 0, kept = 0, failed = 0;
  nlohmann::json report = nlohmann::json::array();
  // Every replica's sessions before anything moves (a moved session is not counted twice).
  std::vector<std::pair<Replica*, v1::Session>> hosted;
  for (Replica& r : replicas) {
    absl::StatusOr<v1::ListSessionsResponse> list = r.client->ListSessions();
    if (!list.ok()) return Fail(inv, absl::StrCat("rebalance: list ", r.name), list.status());
    for (const v1::Session& s : list->sessions()) hosted.emplace_back(&r, s);
  }
  for (auto& [replica, s] : hosted) {
    Replica& from = *replica;
    const std::string& id = s.session_id();
    absl::StatusOr<v1::ServerInfo> owner = inv.client->GetServerInfo(id);
    if (!owner.ok()) return Fail(inv, absl::StrCat("rebalance: route ", id), owner.status());
    if (owner->replica() == from.name) {
      ++kept;
      continue;
    }
    auto to = by_name.find(owner->replica());
    absl::Status st = to == by_name.end()
                          ? absl::FailedPreconditionError(
                                absl::StrCat("the proxy routes ", id, " to replica \"",
                                             owner->replica(), "\", which is not among --replicas"))
                          : Move(id, s.step(), from, *to->second);
    const std::string target = to == by_name.end() ? owner->replica() : to->second->name;
    report.push_back({{"session", id},
                      {"from", from.name},
                      {"to", target},
                      {"step", s.step()},
                      {"error", st.ok() ? "" : std::string(st.message())}});
    if (st.ok()) {
      ++moved;
      if (!inv.json) {
        std::printf("moved %s (step %lld) from %s to %s\n", id.c_str(),
                    static_cast<long long>(s.step()), from.name.c_str(), target.c_str());
      }
    } else {
      ++failed;
      std::fprintf(stderr, "qtrain: rebalance: %s stays on %s: %s\n", id.c_str(), from.name.c_str(),
                   std::string(st.message()).c_str());
    }
  }
  if (inv.json) {
    std::printf(
        "%s\n",
        nlohmann::json{{"moved", moved}, {"kept", kept}, {"failed", failed}, {"moves", report}}
            .dump()
            .c_str());
  } else {
    std::printf("rebalanced %zu replicas: %d sessions moved, %d already in place, %d failed\n",
                replicas.size(), moved, kept, failed);
  }
  return failed == 0 ? kOk : kRejected;
}

}  // namespace qtrain::cli
