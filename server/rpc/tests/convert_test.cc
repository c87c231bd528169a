// Wire tensor conversion against hostile inputs, and the status mapping.
#include <cmath>
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

// Model inputs in fewer bytes: U8 images with a scale give the bits a client computing
// pixel * (1/255.f) sends as F32; per-channel scale and offset (torchvision's Normalize);
// F16 and BF16 widened exactly (values checked against their published bit layouts).
TEST(TensorConvertTest, InputsInFewerBytesBecomeF32) {
  std::string pixels;
  for (int i = 0; i < 256; ++i) pixels.push_back(static_cast<char>(i));
  v1::Tensor u8 = Wire(v1::Tensor::U8, {64, 4}, pixels);
  u8.add_scale(1 / 255.0f);
  auto x = InputsFromWire(u8, "inputs", 1 << 20);
  ASSERT_TRUE(x.ok()) << x.status();
  ASSERT_EQ(x->dtype(), DType::kF32);
  for (int i = 0; i < 256; ++i) {
    ASSERT_EQ(x->data<float>()[i], static_cast<float>(i) * (1 / 255.0f)) << i;
  }
  // Per channel (the last axis): (v / 255 - mean) / std as scale 1/(255 std), offset -mean/std.
  v1::Tensor rgb = Wire(v1::Tensor::U8, {1, 3}, std::string("\x00\x80\xff", 3));
  for (float sc : {2.0f, 0.5f, 1.0f}) rgb.add_scale(sc);
  for (float of : {-1.0f, 0.0f, 3.0f}) rgb.add_offset(of);
  auto y = InputsFromWire(rgb, "inputs", 1 << 20);
  ASSERT_TRUE(y.ok()) << y.status();
  EXPECT_EQ(y->data<float>()[0], -1.0f);
  EXPECT_EQ(y->data<float>()[1], 64.0f);
  EXPECT_EQ(y->data<float>()[2], 258.0f);
  // F16: 1.0 = 0x3c00, -2.0 = 0xc000, 65504 = 0x7bff, the smallest subnormal 2^-24 = 0x0001.
  const uint16_t half[] = {0x3c00, 0xc000, 0x7bff, 0x0001};
  auto h = InputsFromWire(
      Wire(v1::Tensor::F16, {4}, std::string(reinterpret_cast<const char*>(half), 8)), "inputs",
      1 << 20);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->data<float>()[0], 1.0f);
  EXPECT_EQ(h->data<float>()[1], -2.0f);
  EXPECT_EQ(h->data<float>()[2], 65504.0f);
  EXPECT_EQ(h->data<float>()[3], std::ldexp(1.0f, -24));
  // BF16: the top half of the f32 bits (1.5 = 0x3fc0, -0.25 = 0xbe80).
  const uint16_t bf[] = {0x3fc0, 0xbe80};
  auto b =
      InputsFromWire(Wire(v1::Tensor::BF16, {2}, std::string(reinterpret_cast<const char*>(bf), 4)),
                     "inputs", 1 << 20);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->data<float>()[0], 1.5f);
  EXPECT_EQ(b->data<float>()[1], -0.25f);
  // F32 without scale passes through; I32 token ids too.
  auto f = InputsFromWire(ToWire(Tensor::FromFloats({2}, {1, 2})), "inputs", 1 << 20);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->data<float>()[1], 2.0f);
}

TEST(TensorConvertTest, BadInputScalesNameTheField) {
  const float inf = std::numeric_limits<float>::infinity();
  v1::Tensor u8 = Wire(v1::Tensor::U8, {2, 3}, std::string(6, 'a'));
  u8.add_scale(1);
  u8.add_scale(2);  // neither 1 nor 3 values
  EXPECT_THAT(InputsFromWire(u8, "batch.inputs", 1 << 20).status().message(),
              HasSubstr("batch.inputs.scale has 2 values; give 1 or one per element"));
  u8.clear_scale();
  u8.add_offset(inf);
  EXPECT_THAT(InputsFromWire(u8, "batch.inputs", 1 << 20).status().message(),
              HasSubstr("batch.inputs.offset[0] is inf"));
  u8.clear_offset();
  u8.add_scale(3e38f);  // 97 * 3e38 overflows
  EXPECT_THAT(InputsFromWire(u8, "batch.inputs", 1 << 20).status().message(),
              HasSubstr("after its dtype, scale and offset (must be finite)"));
  v1::Tensor ids = ToWire(Tensor::Zeros(DType::kS32, {2}));
  ids.add_scale(2);
  EXPECT_THAT(InputsFromWire(ids, "inputs", 1 << 20).status().message(),
              HasSubstr("do not apply to I32 token ids"));
  EXPECT_THAT(FromWire(ids, "batch.targets", 1 << 20).status().message(),
              HasSubstr("batch.targets: scale and offset are for model inputs only"));
  const uint16_t half_nan = 0x7e00;
  EXPECT_THAT(InputsFromWire(Wire(v1::Tensor::F16, {1},
                                  std::string(reinterpret_cast<const char*>(&half_nan), 2)),
                             "inputs", 1 << 20)
                  .status()
                  .message(),
              HasSubstr("element 0 is nan"));
  EXPECT_THAT(FromWire(Wire(v1::Tensor::F16, {1}, std::string(2, '\0')), "targets", 1 << 20)
                  .status()
                  .message(),
              HasSubstr("F16 and BF16 are for model inputs"));
  // The limit counts what the server keeps: 4 bytes an element.
  EXPECT_EQ(InputsFromWire(Wire(v1::Tensor::U8, {1024}, std::string(1024, 'a')), "inputs", 2048)
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
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
