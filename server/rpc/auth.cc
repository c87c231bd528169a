#include "server/rpc/auth.h"

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/engine/session_id.h"
#include "server/rpc/grpc_status.h"

namespace qtrain::rpc {
namespace {

constexpr absl::string_view kTrainerPrefix = "/qtrain.v1.Trainer/";
constexpr absl::string_view kHealthPrefix = "/grpc.health.v1.Health/";
constexpr absl::string_view kClusterPrefix = "/qtrain.v1.Cluster/";

absl::string_view View(grpc::string_ref s) { return absl::string_view(s.data(), s.size()); }

// The verified client certificate's common name from a call's (or connection's) AuthContext.
std::optional<std::string> CommonName(const grpc::AuthContext* context) {
  if (context == nullptr) return std::nullopt;
  std::vector<grpc::string_ref> cn = context->FindPropertyValues("x509_common_name");
  if (cn.empty()) return std::nullopt;
  return std::string(View(cn.front()));
}

// Two headers could name two identities, and each reader would pick its own.
absl::Status TwoAuthorizations() {
  return absl::UnauthenticatedError(
      "the call carries more than one authorization header; send exactly one");
}

}  // namespace

absl::Status Authenticator::Authorize(const Identity& who, absl::string_view method) {
  if (RoleAllows(who.role, method)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("role ", RoleName(who.role), " of tenant \"",
                                                  who.tenant, "\" may not call ", method));
}

absl::StatusOr<Identity> Authenticator::Authenticate(
    std::optional<absl::string_view> authorization,
    std::optional<absl::string_view> cert_cn) const {
  if (authorization) {
    absl::string_view token = *authorization;
    // The scheme is case-insensitive (RFC 7235).
    if (!absl::StartsWithIgnoreCase(token, "bearer ")) {
      return absl::UnauthenticatedError("the authorization metadata must be \"Bearer <token>\"");
    }
    token = absl::StripAsciiWhitespace(token.substr(7));
    if (token.empty()) return absl::UnauthenticatedError("the bearer token is empty");
    std::optional<Identity> who =
        options_.tokens != nullptr ? options_.tokens->Lookup(token) : std::nullopt;
    if (!who) return absl::UnauthenticatedError("the bearer token is not valid on this server");
    return *who;
  }
  if (options_.cert_identity && cert_cn) {
    if (!engine::IsValidIdPart(*cert_cn)) {
      return absl::UnauthenticatedError(
          absl::StrCat("the client certificate's common name \"", absl::CEscape(*cert_cn),
                       "\" is not a tenant name (1 to 64 of [A-Za-z0-9_-])"));
    }
    return Identity{std::string(*cert_cn), options_.cert_role};
  }
  return absl::UnauthenticatedError(
      options_.tokens != nullptr
          ? "this server needs credentials: send \"authorization: Bearer <token>\" metadata"
          : "this server needs a client certificate");
}

absl::StatusOr<Identity> Authenticator::Authenticate(const Credentials& credentials) const {
  if (credentials.several_authorizations) return TwoAuthorizations();
  return Authenticate(credentials.authorization, credentials.cert_cn);
}

Credentials Authenticator::CredentialsOf(const grpc::ServerContextBase& ctx) {
  Credentials c;
  const auto& md = ctx.client_metadata();
  c.several_authorizations = md.count("authorization") > 1;
  if (auto it = md.find("authorization"); it != md.end()) {
    c.authorization = std::string(View(it->second));
  }
  c.cert_cn = CommonName(ctx.auth_context().get());
  return c;
}

absl::StatusOr<Identity> Authenticator::Identify(const grpc::ServerContextBase& ctx) const {
  return Authenticate(CredentialsOf(ctx));
}

grpc::Status AuthProcessor::Process(const InputMetadata& metadata, grpc::AuthContext* context,
                                    OutputMetadata*, OutputMetadata*) {
  absl::string_view path;
  std::optional<absl::string_view> authorization;
  int authorizations = 0;
  for (const auto& [key, value] : metadata) {
    if (View(key) == ":path") path = View(value);
    if (View(key) == "authorization") {
      authorization = View(value);
      ++authorizations;
    }
  }
  if (absl::StartsWith(path, kHealthPrefix)) return grpc::Status::OK;  // probes need no secret
  // The Trainer's handlers authenticate and authorize each call themselves (CallGate), so
  // that refusals reach the audit log with the caller's address.
  if (absl::StartsWith(path, kTrainerPrefix)) return grpc::Status::OK;
  // Servers call each other's Cluster service with an HMAC under the cluster secret in the
  // request (cluster_service.h), not with a client's token.
  if (absl::StartsWith(path, kClusterPrefix)) return grpc::Status::OK;
  if (authorizations > 1) return ToGrpcStatus(TwoAuthorizations());
  absl::StatusOr<Identity> who = auth_->Authenticate(authorization, CommonName(context));
  if (!who.ok()) return ToGrpcStatus(who.status());
  return grpc::Status::OK;
}

}  // namespace qtrain::rpc
