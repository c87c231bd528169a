#include "server/store/session_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "kernels/sync.h"
#include "server/engine/memory_budget.h"
#include "server/engine/session_id.h"
#include "server/store/checkpoint_io.h"
#include "server/store/session_checkpoint.h"

namespace qtrain::store {
namespace {

constexpr char kSuffix[] = ".safetensors";
constexpr uint64_t kMaxCheckpointBytes = uint64_t{64} << 30;

absl::Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat("cannot create ", path, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

// Takes an exclusive flock on <data_dir>/LOCK and writes this process's pid into it; returns the
// descriptor that holds the lock.
absl::StatusOr<int> LockDataDir(const std::string& data_dir) {
  const std::string path = data_dir + "/LOCK";
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) {
      char pid[32] = {};
      const ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
      ::close(fd);
      return absl::FailedPreconditionError(absl::StrCat(
          "data dir ", data_dir, " is in use by another qtrain-server (pid ",
          n > 0 ? absl::StripAsciiWhitespace(pid) : "unknown", "); give each server its own"));
    }
    // A file system without flock (some network mounts): run, but say that nothing guards the
    // directory.
    std::fprintf(stderr,
                 "qtrain-server: warning: cannot lock %s (%s); make sure no other server uses "
                 "%s\n",
                 path.c_str(), std::strerror(err), data_dir.c_str());
  }
  const std::string me = absl::StrCat(::getpid(), "\n");
  // The pid only serves the message above: a failed write is not an error. Written before the
  // truncation so that a reader never sees an empty file.
  const bool wrote_pid = ::pwrite(fd, me.data(), me.size(), 0) > 0 &&
                         ::ftruncate(fd, static_cast<off_t>(me.size())) == 0;
  (void)wrote_pid;
  return fd;
}

// The entry names of a directory (none when it cannot be read).
std::vector<std::string> ListDir(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

}  // namespace

absl::Status RunAndWait(engine::Session& session, std::function<void(engine::Trainer&)> fn) {
  qtrain::Notification done;
  QTRAIN_RETURN_IF_ERROR(session.Submit([&](engine::Trainer& t) {
    fn(t);
    done.Notify();
  }));
  done.WaitForNotification();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Open(const std::string& data_dir) {
  QTRAIN_RETURN_IF_ERROR(MakeDir(data_dir));
  QTRAIN_RETURN_IF_ERROR(MakeDir(data_dir + "/sessions"));
  QTRAIN_RETURN_IF_ERROR(MakeDir(data_dir + "/tenants"));
  QTRAIN_ASSIGN_OR_RETURN(const int lock_fd, LockDataDir(data_dir));
  return std::unique_ptr<SessionStore>(new SessionStore(data_dir, lock_fd));
}

SessionStore::~SessionStore() { ::close(lock_fd_); }  // releases the flock

std::string SessionStore::DirFor(absl::string_view tenant) const {
  return tenant.empty() ? absl::StrCat(root_, "/sessions")
                        : absl::StrCat(root_, "/tenants/", tenant);
}

std::string SessionStore::PathFor(const std::string& id) const {
  const absl::string_view tenant = engine::TenantOf(id);
  const absl::string_view name =
      tenant.empty() ? id : absl::string_view(id).substr(tenant.size() + 1);
  return absl::StrCat(DirFor(tenant), "/", name, kSuffix);
}

absl::StatusOr<SavedCheckpoint> SessionStore::Save(const std::string& id, engine::Trainer& trainer,
                                                   int64_t disk_limit) {
  SavedCheckpoint saved;
  QTRAIN_ASSIGN_OR_RETURN(
      const std::string bytes,
      engine::OutOfMemoryAsStatus(
          absl::StrCat("saving session \"", id, "\""), [&]() -> absl::StatusOr<std::string> {
            QTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, CheckpointFromTrainer(trainer));
            return EncodeCheckpoint(file, &saved.crc32);
          }));
  saved.path = PathFor(id);
  saved.step = trainer.step();
  saved.bytes = static_cast<int64_t>(bytes.size());
  const std::string tenant(engine::TenantOf(id));
  {
    qtrain::MutexLock lock(&mu_);
    if (disk_limit > 0) {
      // The tenant's other sessions, each at the larger of its durable file and a save in flight.
      int64_t use = 0;
      for (const auto& [other, d] : durable_) {
        if (other == id || engine::TenantOf(other) != tenant) continue;
        auto w = writing_.find(other);
        use += std::max(d.bytes, w == writing_.end() ? 0 : w->second);
      }
      for (const auto& [other, bytes] : writing_) {
        if (other != id && engine::TenantOf(other) == tenant && !durable_.count(other)) {
          use += bytes;
        }
      }
      if (use + saved.bytes > disk_limit) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "tenant \"", tenant, "\" uses ", use, " bytes of checkpoints and this one needs ",
            saved.bytes, " more; its quota is ", disk_limit,
            " (max_checkpoint_bytes in the access file, or --tenant_max_checkpoint_bytes)"));
      }
    }
    writing_[id] += saved.bytes;
  }
  absl::Status wrote = tenant.empty() ? absl::OkStatus() : MakeDir(DirFor(tenant));
  if (wrote.ok()) wrote = WriteFileDurably(saved.path, bytes);
  qtrain::MutexLock lock(&mu_);
  if ((writing_[id] -= saved.bytes) <= 0) writing_.erase(id);
  QTRAIN_RETURN_IF_ERROR(wrote);
  durable_[id] = {saved.step, saved.bytes};
  return saved;
}

int64_t SessionStore::LastDurableStep(const std::string& id) const {
  qtrain::MutexLock lock(&mu_);
  auto it = durable_.find(id);
  return it == durable_.end() ? -1 : it->second.step;
}

absl::Status SessionStore::Forget(const std::string& id) {
  const std::string path = PathFor(id);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::InternalError(absl::StrCat("session ", id, " was deleted but its checkpoint ",
                                            path, " could not be removed (", std::strerror(errno),
                                            "): it will be restored at the next start"));
  }
  {
    qtrain::MutexLock lock(&mu_);
    durable_.erase(id);
  }
  // The removal itself must survive a crash.
  const int dfd = ::open(DirFor(engine::TenantOf(id)).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

std::vector<std::string> SessionStore::RestoreAll(engine::SessionManager& sessions,
                                                  std::vector<std::string>* errors,
                                                  const engine::StepGroupFactory& groups) {
  std::vector<std::string> restored;
  RestoreDir("", sessions, &restored, errors, groups);
  // One directory per tenant; names that are not valid tenants are not ours (skipped).
  for (const std::string& tenant : ListDir(absl::StrCat(root_, "/tenants"))) {
    if (engine::IsValidIdPart(tenant)) RestoreDir(tenant, sessions, &restored, errors, groups);
  }
  return restored;
}

void SessionStore::RestoreDir(const std::string& tenant, engine::SessionManager& sessions,
                              std::vector<std::string>* restored, std::vector<std::string>* errors,
                              const engine::StepGroupFactory& groups) {
  const std::string dir = DirFor(tenant);
  std::vector<std::string> names;
  for (const std::string& name : ListDir(dir)) {
    // Temporary files of writes a crash interrupted (the data dir is locked: no writer is live).
    if (absl::EndsWith(name, absl::StrCat(kSuffix, ".tmp"))) {
      ::unlink(absl::StrCat(dir, "/", name).c_str());
    } else if (absl::EndsWith(name, kSuffix)) {
      names.push_back(name);
    }
  }
  for (const std::string& name : names) {
    const std::string id =
        engine::JoinSessionId(tenant, name.substr(0, name.size() - std::strlen(kSuffix)));
    const std::string path = absl::StrCat(dir, "/", name);
    absl::Status s = [&]() -> absl::Status {
      QTRAIN_ASSIGN_OR_RETURN(std::string bytes, ReadWholeFile(path, kMaxCheckpointBytes));
      QTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, DecodeCheckpoint(bytes));
      QTRAIN_ASSIGN_OR_RETURN(SessionConfig config, ConfigFromCheckpoint(file));
      {
        // Durable at the checkpoint's step before it is loaded: the session's first autosave
        // must not rewrite the file it was just read from.
        qtrain::MutexLock lock(&mu_);
        durable_[id] = {config.step, static_cast<int64_t>(bytes.size())};
      }
      // Built and loaded before it is registered: a checkpoint that fails to load leaves no
      // session behind.
      absl::StatusOr<std::shared_ptr<engine::Session>> session = sessions.Create(
          id, config.spec, config.rules, config.optimizer, config.seed,
          [&](const std::string&, engine::Trainer& t) -> absl::Status {
            if (config.world_size > 1) {
              if (!groups) {
                return absl::FailedPreconditionError(
                    absl::StrCat("a data-parallel session of ", config.world_size,
                                 " ranks, and this server has no data-parallel group configured"));
              }
              QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<engine::StepGroup> g,
                                      groups(id, config.world_size));
              t.set_step_group(std::move(g));
            }
            return LoadCheckpoint(file, t);
          },
          config.backend);
      if (!session.ok()) {
        qtrain::MutexLock lock(&mu_);
        durable_.erase(id);
      }
      return session.status();
    }();
    if (s.ok()) {
      restored->push_back(id);
    } else if (errors != nullptr) {
      errors->push_back(absl::StrCat(path, ": ", s.ToString()));
    }
  }
}

}  // namespace qtrain::store
