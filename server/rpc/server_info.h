// ServerInfo (GetServerInfo): the CPU, its ISA levels, the int8 kernels picked for training's
// shapes and the float implementations chosen. Built once at startup on the main thread
// (choosing kernels creates oneDNN primitives and times GEMMs, which gRPC threads must not do);
// then copied, with the float choices sessions made since (WithCurrentImplementations).
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "qtrain/v1/trainer_service.pb.h"
#include "server/engine/memory_budget.h"

namespace qtrain::rpc {

// Lists every device with a budget in `budgets` (may be null: the host, unbounded). Internal when
// oneDNN cannot make a CPU engine or a primitive.
absl::StatusOr<v1::ServerInfo> MakeServerInfo(int threads_per_session,
                                              const engine::DeviceBudgets* budgets);

// `info` with what changes while the server runs: its implementations replaced by every float
// choice made so far in this process, and each device's reserved memory from `budgets` (may be
// null). Reads only: nothing runs.
v1::ServerInfo CurrentServerInfo(v1::ServerInfo info, const engine::DeviceBudgets* budgets);

// "AMD EPYC 9B45 | avx512_vnni; int8: matmul onednn:brg:avx512_core_vnni, conv ..." — the
// startup log line.
std::string ServerInfoSummary(const v1::ServerInfo& info);

}  // namespace qtrain::rpc
