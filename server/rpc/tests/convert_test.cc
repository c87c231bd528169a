// Wire tensor conversion against hostile inputs, and the status mapping.
#include <cstring>
#include <limits>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/rpc/grpc_status.h"
#include "server/rpc/tensor_convert.h"

namespace qtrain::rpc {
namespace {

using ::testing::HasSubstr;

v1::Tensor Wire(v1::Tensor::DType dtype, std::vector<int64_t> shape, std::string data) {
  v1::Tensor t;
  t.set_dtype(dtype);
  for (int64_t d : shape) t.add_shape(d);
  t.set_data(std::move(data));
  return t;
}

std::string Floats(std::vector<float> v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

TEST(TensorConvertTest, RoundTrip) {
  Tensor t = Tensor::FromFloats({2, 2}, {1, -2, 3.5f, 0});
  auto back = FromWire(ToWire(t), "inputs", 1 << 20);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->shape(), t.shape());
  EXPECT_EQ(std::memcmp(back->raw(), t.raw(), t.nbytes()), 0);
  Tensor ids = Tensor::Zeros(DType::kS32, {3});
  ids.data<int32_t>()[2] = 9;
  auto ids_back = FromWire(ToWire(ids), "inputs", 1 << 20);
  ASSERT_TRUE(ids_back.ok());
  EXPECT_EQ(ids_back->data<int32_t>()[2], 9);
}

struct Bad {
  v1::Tensor wire;
  absl::StatusCode code;
  const char* part;
};

TEST(TensorConvertTest, BadTensorsNameTheFieldAndValue) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<Bad> cases = {
      {Wire(v1::Tensor::DTYPE_UNSPECIFIED, {1}, Floats({1})), absl::StatusCode::kInvalidArgument,
       "batch.inputs.dtype DTYPE_UNSPECIFIED"},
      {Wire(v1::Tensor::F32, {2, 2}, Floats({1, 2, 3})), absl::StatusCode::kInvalidArgument,
       "has 12 bytes; f32 [2, 2] needs 16"},
      {Wire(v1::Tensor::F32, {-1}, ""), absl::StatusCode::kInvalidArgument, "negative dim -1"},
      {Wire(v1::Tensor::F32, {1, 1, 1, 1, 1, 1, 1, 1, 1}, Floats({1})),
       absl::StatusCode::kInvalidArgument, "rank 9"},
      {Wire(v1::Tensor::F32, {1 << 20, 1 << 20}, ""), absl::StatusCode::kResourceExhausted,
       "exceeds the limit of 1048576 bytes"},
      {Wire(v1::Tensor::F32, {2}, Floats({1, nan})), absl::StatusCode::kInvalidArgument,
       "element 1 is nan"},
  };
  for (const Bad& c : cases) {
    auto r = FromWire(c.wire, "batch.inputs", 1 << 20);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.part));
  }
}

TEST(GrpcStatusTest, SameCodeAndMessage) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  for (auto s : {absl::InvalidArgumentError("bad x"), absl::NotFoundError("no session"),
                 absl::FailedPreconditionError("count 0"), absl::ResourceExhaustedError("full"),
                 absl::UnavailableError("stopping"), absl::DataLossError("crc")}) {
    grpc::Status g = ToGrpcStatus(s);
    EXPECT_EQ(static_cast<int>(g.error_code()), static_cast<int>(s.code()));
    EXPECT_EQ(g.error_message(), std::string(s.message()));
  }
  EXPECT_EQ(ToGrpcStatus(absl::InvalidArgumentError("x")).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace qtrain::rpc
