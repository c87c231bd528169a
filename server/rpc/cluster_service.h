// ClusterService: qtrain.v1.Cluster, what qtrain servers call on each other to form
// data-parallel groups (cluster.proto). JoinGroup only checks the request and hands it to the
// server's WorkerRanks, which join in the background: no kernels run on gRPC threads.
//
// Authentication: the request's proof (an HMAC under the cluster secret), checked by
// WorkerRanks; the server's bearer tokens and client certificates do not apply to it.
#pragma once

#include "qtrain/v1/cluster.grpc.pb.h"
#include "server/cluster/dp_worker.h"

namespace qtrain::rpc {

class ClusterService final : public v1::Cluster::CallbackService {
 public:
  // `ranks` is borrowed and must outlive the server.
  explicit ClusterService(cluster::WorkerRanks* ranks) : ranks_(ranks) {}
  grpc::ServerUnaryReactor* JoinGroup(grpc::CallbackServerContext* ctx,
                                      const v1::JoinGroupRequest* request,
                                      v1::JoinGroupResponse* response) override;

 private:
  cluster::WorkerRanks* ranks_;
};

}  // namespace qtrain::rpc
