// qtrain::Mutex, MutexLock and Notification: Abseil's, made visible to ThreadSanitizer.
//
// Debian's Abseil is not built with TSan, so TSan cannot see the happens-before edges that
// absl::Mutex creates and reports every access it guards as a race. In a TSan build (make tsan)
// these wrappers announce each acquire and release to TSan; in every other build they are
// absl::Mutex exactly. Use them instead of absl::Mutex in qtrain's own code so that any race TSan
// reports is a real one.
#pragma once

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

#if defined(__SANITIZE_THREAD__)
#define QTRAIN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define QTRAIN_TSAN 1
#endif
#endif

#ifdef QTRAIN_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace qtrain {

class ABSL_LOCKABLE Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void Lock() ABSL_EXCLUSIVE_LOCK_FUNCTION() {
    mu_.Lock();
    Acquired();
  }
  void Unlock() ABSL_UNLOCK_FUNCTION() {
    Releasing();
    mu_.Unlock();
  }
  // Blocks, with the lock held on entry and on return, until pred(arg) is true. pred runs with
  // the lock held, on any thread (absl re-evaluates conditions when others unlock).
  template <typename T>
  void Await(bool (*pred)(T*), T* arg) ABSL_EXCLUSIVE_LOCKS_REQUIRED(this) {
    struct Wait {
      Mutex* mu;
      bool (*pred)(T*);
      T* arg;
    } wait{this, pred, arg};
    Releasing();
    mu_.Await(absl::Condition(
        +[](Wait* w) {
          w->mu->Acquired();
          const bool ready = w->pred(w->arg);
          w->mu->Releasing();
          return ready;
        },
        &wait));
    Acquired();
  }

 private:
  void Acquired() {
#ifdef QTRAIN_TSAN
    __tsan_acquire(this);
#endif
  }
  void Releasing() {
#ifdef QTRAIN_TSAN
    __tsan_release(this);
#endif
  }
  absl::Mutex mu_;
};

class ABSL_SCOPED_LOCKABLE MutexLock {
 public:
  explicit MutexLock(Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) { mu_->Lock(); }
  ~MutexLock() ABSL_UNLOCK_FUNCTION() { mu_->Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex* const mu_;
};

// absl::Notification, visible to TSan the same way: what the notifier wrote before Notify()
// happens before what the waiter reads after WaitForNotification().
class Notification {
 public:
  void Notify() {
#ifdef QTRAIN_TSAN
    __tsan_release(this);
#endif
    n_.Notify();
  }
  void WaitForNotification() const {
    n_.WaitForNotification();
#ifdef QTRAIN_TSAN
    __tsan_acquire(const_cast<Notification*>(this));
#endif
  }
  bool HasBeenNotified() const { return n_.HasBeenNotified(); }

 private:
  absl::Notification n_;
};

}  // namespace qtrain
