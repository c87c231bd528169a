// ServerInfo (GetServerInfo): the CPU, its ISA levels and the int8 kernels picked for training's
// shapes. Built once at startup on the main thread (choosing kernels creates oneDNN primitives,
// which gRPC threads must not do) and then only copied.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "qtrain/v1/trainer_service.pb.h"

namespace qtrain::rpc {

// Internal when oneDNN cannot make a CPU engine or a primitive.
absl::StatusOr<v1::ServerInfo> MakeServerInfo(int threads_per_session);

// "AMD EPYC 9B45 | avx512_vnni; int8: matmul onednn:brg:avx512_core_vnni, conv ..." — the
// startup log line.
std::string ServerInfoSummary(const v1::ServerInfo& info);

}  // namespace qtrain::rpc
