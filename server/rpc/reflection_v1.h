// grpc.reflection.v1.ServerReflection: the stable reflection API that current tools (grpcurl,
// buf curl, Postman) ask first. gRPC 1.51's plugin serves only v1alpha, which qtrain also keeps.
// Answers from the process's generated descriptor pool, which holds qtrain.v1, grpc.health.v1
// (linked in for this) and the reflection protos themselves.
//
// Thread-safe: each stream has its own reactor; the service list is fixed before serving.
#pragma once

#include <string>
#include <vector>

#include "grpc/reflection/v1/reflection.grpc.pb.h"

namespace qtrain::rpc {

class ReflectionV1 final : public grpc::reflection::v1::ServerReflection::CallbackService {
 public:
  // `services`: the full names list_services reports.
  explicit ReflectionV1(std::vector<std::string> services) : services_(std::move(services)) {}

  grpc::ServerBidiReactor<grpc::reflection::v1::ServerReflectionRequest,
                          grpc::reflection::v1::ServerReflectionResponse>*
  ServerReflectionInfo(grpc::CallbackServerContext* ctx) override;

  // One request's answer. A file comes with every file it imports, transitively, in each
  // answer: clients may build a descriptor pool from one answer alone.
  grpc::reflection::v1::ServerReflectionResponse Answer(
      const grpc::reflection::v1::ServerReflectionRequest& request) const;

 private:
  const std::vector<std::string> services_;
};

}  // namespace qtrain::rpc
