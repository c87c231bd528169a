#include "server/engine/session.h"

#include <omp.h>

#include <cctype>
#include <cstdio>
#include <new>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"
#include "server/engine/session_id.h"

namespace qtrain::engine {

absl::StatusOr<std::shared_ptr<Session>> Session::Create(
    std::string id, const proto::ModelSpec& spec, const proto::RuleSet& rules,
    const proto::OptimizerConfig& optimizer, uint64_t seed, const SessionOptions& options) {
  if (options.threads < 1 || options.max_queued < 1) {
    return absl::InvalidArgumentError(absl::StrCat("session options: threads ", options.threads,
                                                   " and max_queued ", options.max_queued,
                                                   " must be >= 1"));
  }
  QTRAIN_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, MakeBackend(options.backend));
  QTRAIN_ASSIGN_OR_RETURN(ModelFootprint footprint, Model::Estimate(spec));
  MemoryBudget* budget =
      options.budgets != nullptr ? options.budgets->For(BackendMemory(options.backend)) : nullptr;
  QTRAIN_ASSIGN_OR_RETURN(
      MemoryBudget::Lease lease,
      MemoryBudget::Reserve(budget, SessionBytes(footprint, optimizer),
                            absl::StrCat("session \"", id, "\" (", footprint.parameters,
                                         " parameters with gradients and optimizer state)")));
  std::unique_ptr<Trainer> trainer;
  try {
    QTRAIN_ASSIGN_OR_RETURN(trainer,
                            Trainer::Create(spec, rules, optimizer, seed, std::move(backend)));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("session \"", id, "\": out of memory while building ", footprint.parameters,
                     " parameters (lower qtrain-server --memory_budget_mb)"));
  }
  trainer->set_memory_budget(budget);
  return std::shared_ptr<Session>(
      new Session(std::move(id), std::move(trainer), std::move(lease), options));
}

Session::Session(std::string id, std::unique_ptr<Trainer> trainer, MemoryBudget::Lease lease,
                 const SessionOptions& options)
    : id_(std::move(id)),
      options_(options),
      trainer_(std::move(trainer)),
      lease_(std::move(lease)) {
  info_.id = id_;
  info_.step = trainer_->step();
  info_.parameters = trainer_->model().num_parameters();
  info_.non_trainable = trainer_->model().num_state_elements();
  executor_ = std::thread([this] { Run(); });
}

Session::~Session() { Shutdown(); }

absl::Status Session::Submit(std::function<void(Trainer&)> task, Admission admission) {
  {
    qtrain::MutexLock lock(&mu_);
    if (stopping_) {
      return absl::UnavailableError(absl::StrCat("session ", id_, " is shutting down"));
    }
    const bool bounded = admission == Admission::kBounded;
    const int windowed = static_cast<int>(queue_.size()) - bounded_;
    if (bounded && bounded_ >= options_.max_queued) {
      return absl::ResourceExhaustedError(
          absl::StrCat("session ", id_, " already has ", bounded_,
                       " queued operations (max_queued); retry when they have run"));
    }
    if (!bounded && windowed >= options_.max_windowed) {
      return absl::ResourceExhaustedError(absl::StrCat("session ", id_, " already has ", windowed,
                                                       " queued stream batches (max_windowed)"));
    }
    bounded_ += bounded;
    queue_.push_back(Task{std::move(task), admission});
    info_.queued = static_cast<int64_t>(queue_.size());
  }
  return absl::OkStatus();
}

void Session::Shutdown() {
  {
    qtrain::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (executor_.joinable() && executor_.get_id() != std::this_thread::get_id()) {
    executor_.join();
  }
}

absl::Status Session::PrepareUnshared(const std::function<absl::Status(Trainer&)>& fn) {
  absl::Status s = OutOfMemoryAsStatus(absl::StrCat("preparing session \"", id_, "\""),
                                       [&] { return fn(*trainer_); });
  qtrain::MutexLock lock(&mu_);
  info_.step = trainer_->step();  // e.g. a loaded checkpoint's
  return s;
}

SessionInfo Session::info() const {
  qtrain::MutexLock lock(&mu_);
  return info_;
}

void Session::Run() {
  omp_set_num_threads(options_.threads);  // OpenMP's thread count is per calling thread
  for (;;) {
    Task task;
    {
      qtrain::MutexLock lock(&mu_);
      mu_.Await(
          +[](Session* s)
               ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu_) { return s->stopping_ || !s->queue_.empty(); },
          this);
      if (queue_.empty()) return;  // stopping, and everything accepted has run
      task = std::move(queue_.front());
      queue_.pop_front();
      bounded_ -= task.admission == Admission::kBounded;
      info_.queued = static_cast<int64_t>(queue_.size());
    }
    try {
      task.run(*trainer_);
      if (options_.after_task) options_.after_task(id_, *trainer_);
    } catch (const std::bad_alloc&) {
      // Tasks answer their own allocation failures (steps, loads, saves); one that did not must
      // still not end the process with every other session.
      std::fprintf(stderr, "qtrain-server: session %s: a task ran out of memory\n", id_.c_str());
    }
    qtrain::MutexLock lock(&mu_);
    info_.step = trainer_->step();
  }
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Create(
    std::string id, const proto::ModelSpec& spec, const proto::RuleSet& rules,
    const proto::OptimizerConfig& optimizer, uint64_t seed, const Prepare& prepare,
    const std::string& backend) {
  QTRAIN_ASSIGN_OR_RETURN(const SessionId parsed, ParseSessionId(id, /*allow_empty_name=*/true));
  const std::string tenant(parsed.tenant);
  {
    qtrain::MutexLock lock(&mu_);
    if (static_cast<int>(sessions_.size()) >= options_.max_sessions) {
      return absl::ResourceExhaustedError(
          absl::StrCat("the server already hosts ", sessions_.size(), " sessions (max_sessions)"));
    }
    if (parsed.name.empty()) {
      do {
        // A counter per tenant: a generated name tells nothing about other tenants' sessions.
        id = JoinSessionId(tenant, absl::StrCat("s", ++next_id_[tenant]));
      } while (sessions_.count(id));
    } else if (sessions_.count(id)) {
      return absl::AlreadyExistsError(absl::StrCat("session \"", id, "\" already exists"));
    }
    // Reserved (a null entry: invisible to Get, List and Delete) while it is built and prepared,
    // so that neither the id nor the slot can be taken meanwhile.
    sessions_.emplace(id, nullptr);
  }
  ReapParked();
  auto unreserve = [&] {
    qtrain::MutexLock lock(&mu_);
    sessions_.erase(id);
  };
  // Building the model and preparing it can take a while: outside the lock.
  SessionOptions session_options = options_.session;
  if (!backend.empty()) session_options.backend = backend;
  absl::StatusOr<std::shared_ptr<Session>> session =
      Session::Create(id, spec, rules, optimizer, seed, session_options);
  if (session.ok() && prepare) {
    absl::Status prepared = (*session)->PrepareUnshared([&](Trainer& t) { return prepare(id, t); });
    if (!prepared.ok()) session = prepared;  // destroys the session: nothing left behind
  }
  if (!session.ok()) {
    unreserve();
    ReturnFreedMemory();  // a refused build's peak goes back to the system
    return session.status();
  }
  qtrain::MutexLock lock(&mu_);
  sessions_[id] = *session;
  return session;
}

absl::StatusOr<std::shared_ptr<Session>> SessionManager::Get(const std::string& id) const {
  qtrain::MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second == nullptr) {
    return absl::NotFoundError(absl::StrCat("session \"", id, "\" does not exist"));
  }
  return it->second;
}

std::vector<SessionInfo> SessionManager::List() const {
  qtrain::MutexLock lock(&mu_);
  std::vector<SessionInfo> out;
  for (const auto& [id, s] : sessions_) {
    if (s != nullptr) out.push_back(s->info());  // reserved ids are still being built
  }
  return out;
}

absl::Status SessionManager::Delete(const std::string& id) {
  std::shared_ptr<Session> session;
  {
    qtrain::MutexLock lock(&mu_);
    auto it = sessions_.find(id);
    if (it == sessions_.end() || it->second == nullptr) {
      return absl::NotFoundError(absl::StrCat("session \"", id, "\" does not exist"));
    }
    session = std::move(it->second);
    sessions_.erase(it);
  }
  if (session->OnExecutor()) {
    // Called from one of its own tasks: stop it (the loop ends after this task) and let another
    // thread join it; destroying it here would join the running thread from itself.
    session->Shutdown();
    qtrain::MutexLock lock(&mu_);
    parked_.push_back(std::move(session));
    return absl::OkStatus();
  }
  session->Shutdown();  // outside the lock: queued tasks finish first
  session.reset();
  ReapParked();
  ReturnFreedMemory();
  return absl::OkStatus();
}

void SessionManager::ReapParked() {
  std::vector<std::shared_ptr<Session>> done;
  {
    qtrain::MutexLock lock(&mu_);
    for (auto it = parked_.begin(); it != parked_.end();) {
      if ((*it)->OnExecutor()) {
        ++it;
      } else {
        done.push_back(std::move(*it));
        it = parked_.erase(it);
      }
    }
  }
  done.clear();  // outside the lock: each destructor joins its executor
}

void SessionManager::ShutdownAll() {
  std::map<std::string, std::shared_ptr<Session>> sessions;
  {
    qtrain::MutexLock lock(&mu_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      if (it->second == nullptr) {  // still being created on another thread: its creator owns it
        ++it;
        continue;
      }
      sessions.insert(*it);
      it = sessions_.erase(it);
    }
  }
  for (auto& [id, s] : sessions) s->Shutdown();
  ReapParked();
}

}  // namespace qtrain::engine
