#include "server/rpc/cluster_service.h"

#include "server/rpc/grpc_status.h"

namespace qtrain::rpc {

grpc::ServerUnaryReactor* ClusterService::JoinGroup(grpc::CallbackServerContext* ctx,
                                                    const v1::JoinGroupRequest* request,
                                                    v1::JoinGroupResponse* /*response*/) {
  cluster::JoinRequest join;
  join.group_id = request->group_id();
  join.rank = request->rank();
  join.world_size = request->world_size();
  join.proof = request->proof();
  join.timeout_ms = request->timeout_ms();
  join.bucket_bytes = request->bucket_bytes();
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(ranks_->Join(join)));
  return reactor;
}

}  // namespace qtrain::rpc
