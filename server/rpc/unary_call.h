// UnaryCall: the reactor of one raw unary call. It parses the request bytes (INVALID_ARGUMENT
// when they do not parse: wire_message.h), holds the typed request and response for the
// handler, and Reply() serializes the response (when the status is OK) and finishes the call.
//
// The handler calls Reply exactly once, from any thread (typically a session's executor). The
// reactor deletes itself when gRPC is done with it. The call's CallGate (service_access.h) has
// already authorized it; Reply records mutating calls in the audit log.
#pragma once

#include <type_traits>
#include <utility>

#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/service_access.h"
#include "server/rpc/wire_message.h"

namespace qtrain::rpc {

template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // Returns the call, already answered when `gate` refused it or INVALID_ARGUMENT when `in`
  // does not parse: then `handle` is not called. Otherwise `handle(call)` runs and must Reply
  // eventually.
  template <typename Handler>
  static grpc::ServerUnaryReactor* Start(CallGate gate, const grpc::ByteBuffer* in,
                                         grpc::ByteBuffer* out, Handler&& handle) {
    auto* call = new UnaryCall(out, std::move(gate));
    grpc::ByteBuffer bytes = *in;  // shares the slices; ParseWire consumes its argument
    absl::Status parsed = ParseWire(bytes, &call->request_, "the request");
    if constexpr (kNamesSession) {
      if (parsed.ok()) call->gate_.set_session(call->request_.session_id());  // for the audit
    }
    if (!call->gate_.admitted().ok()) {
      call->Reply(call->gate_.admitted());  // refused before anything else is looked at
    } else if (!parsed.ok()) {
      call->Reply(parsed);
    } else {
      handle(call);
    }
    return call;
  }

  const Request& request() const { return request_; }
  const Caller& caller() const { return gate_.caller(); }
  TenantQuotas* tenants() const { return gate_.tenants(); }
  Response* response() { return &response_; }

  void Reply(absl::Status status) {
    if (status.ok()) status = SerializeWire(response_, out_);
    gate_.Audit(status);
    Finish(ToGrpcStatus(status));
  }

  void OnDone() override { delete this; }

 private:
  template <typename R, typename = void>
  struct HasSessionId : std::false_type {};
  template <typename R>
  struct HasSessionId<R, std::void_t<decltype(std::declval<R>().session_id())>> : std::true_type {};
  static constexpr bool kNamesSession = HasSessionId<Request>::value;

  UnaryCall(grpc::ByteBuffer* out, CallGate gate) : out_(out), gate_(std::move(gate)) {}
  grpc::ByteBuffer* out_;  // gRPC's, valid until OnDone
  CallGate gate_;
  Request request_;
  Response response_;
};

}  // namespace qtrain::rpc
