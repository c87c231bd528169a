// UnaryCall: the reactor of one raw unary call. It parses the request bytes (INVALID_ARGUMENT
// when they do not parse: wire_message.h), holds the typed request and response for the
// handler, and Reply() serializes the response (when the status is OK) and finishes the call.
//
// The handler calls Reply exactly once, from any thread (typically a session's executor). The
// reactor deletes itself when gRPC is done with it.
#pragma once

#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"
#include "server/rpc/grpc_status.h"
#include "server/rpc/wire_message.h"

namespace qtrain::rpc {

template <typename Request, typename Response>
class UnaryCall final : public grpc::ServerUnaryReactor {
 public:
  // Returns the call, already answered INVALID_ARGUMENT when `in` does not parse: then
  // `handle` is not called. Otherwise `handle(call)` runs and must Reply eventually.
  template <typename Handler>
  static grpc::ServerUnaryReactor* Start(const grpc::ByteBuffer* in, grpc::ByteBuffer* out,
                                         Handler&& handle) {
    auto* call = new UnaryCall(out);
    grpc::ByteBuffer bytes = *in;  // shares the slices; ParseWire consumes its argument
    if (absl::Status parsed = ParseWire(bytes, &call->request_, "the request"); !parsed.ok()) {
      call->Reply(parsed);
    } else {
      handle(call);
    }
    return call;
  }

  const Request& request() const { return request_; }
  Response* response() { return &response_; }

  void Reply(absl::Status status) {
    if (status.ok()) status = SerializeWire(response_, out_);
    Finish(ToGrpcStatus(status));
  }

  void OnDone() override { delete this; }

 private:
  explicit UnaryCall(grpc::ByteBuffer* out) : out_(out) {}
  grpc::ByteBuffer* out_;  // gRPC's, valid until OnDone
  Request request_;
  Response response_;
};

}  // namespace qtrain::rpc
