// Status propagation macros. Debian's Abseil 20220623 ships none; these are named so they can
// later become ABSL_RETURN_IF_ERROR / ABSL_ASSIGN_OR_RETURN.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status from the enclosing function when `expr` is not OK.
#define QTRAIN_RETURN_IF_ERROR(expr)                 \
  do {                                               \
    ::absl::Status qtrain_status_ = (expr);          \
    if (!qtrain_status_.ok()) return qtrain_status_; \
  } while (0)

#define QTRAIN_STATUS_CONCAT_INNER_(a, b) a##b
#define QTRAIN_STATUS_CONCAT_(a, b) QTRAIN_STATUS_CONCAT_INNER_(a, b)

// `lhs = value of rexpr` (a StatusOr), or returns its status when not OK.
#define QTRAIN_ASSIGN_OR_RETURN(lhs, rexpr) \
  QTRAIN_ASSIGN_OR_RETURN_IMPL_(QTRAIN_STATUS_CONCAT_(qtrain_sor_, __LINE__), lhs, rexpr)
// NOLINTNEXTLINE(bugprone-macro-parentheses): lhs is a declaration, it cannot be parenthesized.
#define QTRAIN_ASSIGN_OR_RETURN_IMPL_(sor, lhs, rexpr) \
  auto sor = (rexpr);                                  \
  if (!sor.ok()) return std::move(sor).status();       \
  lhs = std::move(sor).value()

// Programmer invariants (not input validation): abort with a message when violated.
#define QTRAIN_CHECK(cond)                                                   \
  do {                                                                       \
    if (!(cond)) ::qtrain::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

namespace qtrain::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace qtrain::internal
