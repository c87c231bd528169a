// The configuration schema the engine reads: the generated qtrain.v1 messages (model spec,
// rules, optimizer), used directly, with no mirrored structs. Only configuration crosses into the
// engine; wire tensors and gRPC stay in server/rpc.
#pragma once

#include "qtrain/v1/model.pb.h"      // IWYU pragma: export
#include "qtrain/v1/optimizer.pb.h"  // IWYU pragma: export
#include "qtrain/v1/rules.pb.h"      // IWYU pragma: export

namespace qtrain::engine {
namespace proto = ::qtrain::v1;
}  // namespace qtrain::engine
