// Messages of qtrain.v1.Trainer as bytes. Every method of the service is registered raw
// (grpc::ByteBuffer) and parsed here, so that a message that does not parse is answered
// INVALID_ARGUMENT naming its type and position: gRPC's own parsing answers UNIMPLEMENTED for a
// unary call, and ends a client stream as if the client had half-closed (issue 10).
//
// Pure functions; thread-safe.
#pragma once

#include <cstdint>

#include <grpcpp/impl/codegen/proto_utils.h>  // SerializationTraits of protobuf messages
#include <grpcpp/support/byte_buffer.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace qtrain::rpc {

// Parses `bytes` (consumed) into `out`. InvalidArgument: "<what> (N bytes) is not a valid
// <message type>".
template <typename M>
absl::Status ParseWire(grpc::ByteBuffer& bytes, M* out, absl::string_view what) {
  const size_t size = bytes.Length();
  if (grpc::SerializationTraits<M>::Deserialize(&bytes, out).ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " (", size, " bytes) is not a valid ", M::descriptor()->full_name()));
}

// The wire form of `m`, replacing what `out` held. Internal when it cannot be serialized (over
// 2 GiB).
template <typename M>
absl::Status SerializeWire(const M& m, grpc::ByteBuffer* out) {
  out->Clear();  // the serializer writes only into an empty buffer
  bool own = false;
  grpc::Status s = grpc::SerializationTraits<M>::Serialize(m, out, &own);
  if (s.ok()) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("cannot serialize a ", M::descriptor()->full_name(), ": ", s.error_message()));
}

}  // namespace qtrain::rpc
