// Authentication and authorization of calls (--auth_tokens, mutual TLS identities).
//
// Two places enforce the same Authenticator. gRPC's AuthMetadataProcessor (AuthProcessor) runs
// for every call on the TLS port before any handler: grpc.health.v1 passes without credentials
// (probes), every other service but the Trainer (reflection) needs a valid caller. The Trainer
// handlers authenticate and authorize their own call (Identify + Authorize, through CallGate) so
// that every refusal is audited with the peer's address; each handler starts with it, and a test
// calls every method under every role. Identities are derived from the call's own metadata, not
// from properties a processor could store: gRPC shares that AuthContext between the calls of a
// connection.
//
// Credentials, in order: "authorization: Bearer <token>" (looked up in the access file; a bad
// token is UNAUTHENTICATED even when a certificate would do), then, with `cert_identity`, the
// client certificate's common name as the tenant (mutual TLS) with `cert_role`. Missing or bad
// credentials: UNAUTHENTICATED; a role that may not call the method: PERMISSION_DENIED.
#pragma once

#include <optional>
#include <string>
#include "absl/strings/string_view.h"

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include "absl/status/statusor.h"
#include "server/rpc/access.h"
#include "server/rpc/caller.h"

namespace qtrain::rpc {

struct AuthOptions {
  AccessFile* tokens = nullptr;  // not owned; null: no bearer tokens
  bool cert_identity = false;    // mutual TLS: the certificate's CN names the tenant
  Role cert_role = Role::kTrainer;
  bool enabled() const { return tokens != nullptr || cert_identity; }
};

// What a call presents: its authorization metadata and its verified certificate's common name.
struct Credentials {
  std::optional<std::string> authorization;
  std::optional<std::string> cert_cn;
  bool several_authorizations = false;  // refused: each reader could pick another one
};

class Authenticator {
 public:
  explicit Authenticator(AuthOptions options) : options_(options) {}
  bool enabled() const { return options_.enabled(); }

  // Who presents `authorization` (the metadata value, if any) and `cert_cn` (the verified client
  // certificate's common name, if any). Unauthenticated naming what is missing or wrong.
  absl::StatusOr<Identity> Authenticate(std::optional<absl::string_view> authorization,
                                        std::optional<absl::string_view> cert_cn) const;

  // Who presents `credentials` (Unauthenticated as Authenticate, or for several authorization
  // headers). Streams call it again at each message: a revoked token ends them.
  absl::StatusOr<Identity> Authenticate(const Credentials& credentials) const;
  // The credentials of the call of `ctx`.
  static Credentials CredentialsOf(const grpc::ServerContextBase& ctx);
  // Who makes the call of `ctx`: Authenticate(CredentialsOf(ctx)).
  absl::StatusOr<Identity> Identify(const grpc::ServerContextBase& ctx) const;
  // PermissionDenied naming the role and the method (e.g. "Train") when `who` may not call it.
  static absl::Status Authorize(const Identity& who, absl::string_view method);

 private:
  AuthOptions options_;
};

// The gRPC side: installed on the TLS port's credentials. Never blocks (a token lookup is a hash
// and a map lookup; the access file is re-read at most once a second).
class AuthProcessor final : public grpc::AuthMetadataProcessor {
 public:
  explicit AuthProcessor(const Authenticator* auth) : auth_(auth) {}
  bool IsBlocking() const override { return false; }
  grpc::Status Process(const InputMetadata& metadata, grpc::AuthContext* context,
                       OutputMetadata* consumed, OutputMetadata* response) override;

 private:
  const Authenticator* auth_;  // not owned
};

}  // namespace qtrain::rpc
