// GuardedBackend: a test backend whose tensors live in host pages mapped PROT_NONE except while
// one of its own ops runs; the arithmetic is the reference backend's. Any read or write of tensor
// memory from outside the backend — an engine loop, the store, the wire conversion — faults, and
// a tensor or pointer of another device handed to one of its ops aborts naming the op. It is the
// proof that the engine reaches tensor data only through Backend, as a GPU backend needs
// (the server offers it as --backend=guarded for that purpose).
//
// Slow by design: every op unprotects and re-protects each live tensor (two mprotect calls).
// Owned by one executor thread like every Backend; its tensors may be freed from any thread and
// may outlive it.
#pragma once

#include <memory>

#include "kernels/backend/backend.h"

namespace qtrain {

std::unique_ptr<Backend> MakeGuardedBackend();

}  // namespace qtrain
