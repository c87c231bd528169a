// The guarded test backend itself: its tensors round-trip through the copies and compute as the
// reference backend does inside its ops, and every other way to their bytes dies — which is what
// lets the server-level test (tests/integration/guarded_backend_test.cc) prove the engine, store
// and rpc layers never touch tensor data outside Backend.
#include "kernels/backend/guarded_backend.h"

#include <cstring>

#include <gtest/gtest.h>

#include "kernels/backend/backend_registry.h"

namespace qtrain {
namespace {

Tensor Host(std::initializer_list<float> v) {
  return Tensor::FromFloats({static_cast<int64_t>(v.size())}, std::vector<float>(v));
}

TEST(GuardedBackend, ComputesInsideItsOps) {
  std::unique_ptr<Backend> b = MakeGuardedBackend();
  EXPECT_EQ(b->device().Name(), "guarded:0");
  absl::StatusOr<Tensor> x = b->ToDevice(Host({1, -2, 3}));
  ASSERT_TRUE(x.ok()) << x.status();
  EXPECT_EQ(x->device().Name(), "guarded:0");
  absl::StatusOr<Tensor> y = b->Activation(EltwiseKind::kRelu, *x);
  ASSERT_TRUE(y.ok()) << y.status();
  ASSERT_TRUE(b->AddInto(*y, *x).ok());
  absl::StatusOr<Tensor> host = b->ToHost(*std::move(y));
  ASSERT_TRUE(host.ok()) << host.status();
  EXPECT_TRUE(host->device().is_host());
  EXPECT_EQ(host->span<float>()[0], 2.0f);
  EXPECT_EQ(host->span<float>()[1], -2.0f);
  EXPECT_EQ(host->span<float>()[2], 6.0f);
  // A host tensor handed to a tensor-level op is refused by name, not computed on.
  absl::Status s = b->AddInto(*x, Host({1, 1, 1}));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("on cpu:0"), std::string::npos) << s;
}

TEST(GuardedBackend, IsOneOfTheServersBackends) {
  EXPECT_TRUE(IsBackend("guarded"));
  EXPECT_EQ(BackendMemory("guarded"), "cpu:0");  // its pages are host memory
  bool listed = false;
  for (const BackendInfo& info : AvailableBackends()) {
    if (info.name == "guarded") listed = info.device == "guarded:0";
  }
  EXPECT_TRUE(listed);
  absl::StatusOr<std::unique_ptr<Backend>> b = MakeBackend("guarded");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_STREQ((*b)->name(), "guarded");
}

TEST(GuardedBackendDeathTest, EveryOtherAccessDies) {
  std::unique_ptr<Backend> b = MakeGuardedBackend();
  absl::StatusOr<Tensor> t = b->ToDevice(Host({1, 2, 3, 4}));
  ASSERT_TRUE(t.ok());
  const volatile float* bytes = static_cast<const float*>(t->raw());
  EXPECT_DEATH(static_cast<void>(bytes[0]), "");          // a stray read faults
  EXPECT_DEATH(std::memset(t->raw(), 0, 4), "");          // and a stray write
  EXPECT_DEATH(static_cast<void>(t->data<float>()), "");  // typed access is host-only
  EXPECT_DEATH(Tensor copy(*t), "");                      // as are implicit host copies
  // A host pointer reaching a descriptor-level op (bypassing the tensor checks) aborts naming it.
  Tensor host = Host({1, 2, 3, 4});
  EXPECT_DEATH(static_cast<void>(b->Fill(4, 0.0f, host.data<float>())),
               "Fill: an operand is not guarded:0 memory");
  // Between ops the tensor's pages stay closed after use, too.
  ASSERT_TRUE(b->Fill(*t, 7.0f).ok());
  EXPECT_DEATH(static_cast<void>(bytes[3]), "");
  absl::StatusOr<Tensor> back = b->HostCopy(*t);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->span<float>()[3], 7.0f);
}

}  // namespace
}  // namespace qtrain
