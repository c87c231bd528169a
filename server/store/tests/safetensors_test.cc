// safetensors round trips, a hand-made file from the format's spec, corrupt and hostile inputs
// (never a crash), checksums and durable writes.
#include "server/store/safetensors.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "server/store/checkpoint_io.h"

namespace qtrain::store {
namespace {

using ::testing::HasSubstr;

SafetensorsFile Sample() {
  SafetensorsFile f;
  f.tensors["params/Dense_0/kernel"] = Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6});
  Tensor count = Tensor::Empty(DType::kS32, {1});
  count.data<int32_t>()[0] = 7;
  f.tensors["quant_stats/Dense_0/dot_general0_lhs/count"] = count;
  f.tensors["empty"] = Tensor::Empty(DType::kF32, {0, 4});
  f.metadata["step"] = "12";
  f.metadata["model_spec"] = R"({"input": {"shape": [3]}})";
  return f;
}

TEST(SafetensorsTest, RoundTrip) {
  const std::string bytes = SerializeSafetensors(Sample());
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) {
    n |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  }
  EXPECT_EQ(n % 8, 0u);  // data aligned
  auto parsed = ParseSafetensors(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->metadata, Sample().metadata);
  ASSERT_EQ(parsed->tensors.size(), 3u);
  const Tensor& k = parsed->tensors.at("params/Dense_0/kernel");
  EXPECT_EQ(k.shape(), (Shape{2, 3}));
  EXPECT_EQ(k.data<float>()[5], 6.0f);
  EXPECT_EQ(parsed->tensors.at("quant_stats/Dense_0/dot_general0_lhs/count").data<int32_t>()[0], 7);
}

TEST(SafetensorsTest, ReadsAFileWrittenToTheSpec) {
  // Header as other writers produce it: unpadded, keys in any order.
  const std::string header = R"({"b":{"dtype":"I8","shape":[2],"data_offsets":[4,6]},)"
                             R"("a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  std::string bytes(8, '\0');
  bytes[0] = static_cast<char>(header.size());
  bytes += header;
  const float one = 1.0f;
  bytes.append(reinterpret_cast<const char*>(&one), 4);
  bytes += std::string("\x05\xfb", 2);
  auto parsed = ParseSafetensors(bytes);
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->tensors.at("a").data<float>()[0], 1.0f);
  EXPECT_EQ(parsed->tensors.at("b").data<int8_t>()[1], -5);
}

struct Bad {
  std::string header;
  size_t data_bytes;
  absl::StatusCode code;
  const char* part;
};

std::string WithHeader(const std::string& header, size_t data_bytes) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) {
    bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xFF);
  }
  return bytes + header + std::string(data_bytes, '\0');
}

// PyTorch's files: F16 / BF16 weights widen to F32 exactly; an I64 num_batches_tracked is checked
// and skipped.
TEST(SafetensorsTest, HalvesWidenAndOtherDTypesAreListed) {
  std::string data;
  for (uint16_t bits : {uint16_t{0x3C00}, uint16_t{0xC500}}) {  // F16 1.0, -5.0
    data.append(reinterpret_cast<const char*>(&bits), 2);
  }
  for (uint16_t bits : {uint16_t{0x3FC0}, uint16_t{0x0001}}) {  // BF16 1.5, a subnormal
    data.append(reinterpret_cast<const char*>(&bits), 2);
  }
  const int64_t tracked = 7;
  data.append(reinterpret_cast<const char*>(&tracked), 8);
  const std::string header =
      R"({"h":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},)"
      R"("b":{"dtype":"BF16","shape":[2],"data_offsets":[4,8]},)"
      R"("bn.num_batches_tracked":{"dtype":"I64","shape":[],"data_offsets":[8,16]}})";
  std::string bytes = WithHeader(header, 0).substr(0, 8 + header.size()) + data;
  auto r = ParseSafetensors(bytes);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tensors.at("h").dtype(), DType::kF32);
  EXPECT_EQ(r->tensors.at("h").data<float>()[0], 1.0f);
  EXPECT_EQ(r->tensors.at("h").data<float>()[1], -5.0f);
  EXPECT_EQ(r->tensors.at("b").data<float>()[0], 1.5f);
  EXPECT_EQ(r->tensors.at("b").data<float>()[1], std::ldexp(1.0f, -133));
  EXPECT_EQ(r->unloaded.at("bn.num_batches_tracked"), "I64");
  EXPECT_EQ(r->tensors.count("bn.num_batches_tracked"), 0u);
}

TEST(SafetensorsTest, RejectsCorruptFilesWithReasons) {
  const std::vector<Bad> cases = {
      {"not json", 0, absl::StatusCode::kDataLoss, "not a JSON object"},
      {R"({"a":{"dtype":"F12","shape":[1],"data_offsets":[0,2]}})", 2,
       absl::StatusCode::kInvalidArgument, "dtype F12"},
      {R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,4]}})", 4, absl::StatusCode::kDataLoss,
       "do not hold 8 bytes"},
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4, absl::StatusCode::kDataLoss,
       "do not hold 8 bytes"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8, absl::StatusCode::kDataLoss,
       "after the last tensor"},
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
       R"("b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
       4, absl::StatusCode::kDataLoss, "overlap"},
      {R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4, absl::StatusCode::kDataLoss,
       "bad shape"},
      {R"({"a":{"dtype":"F32","shape":[1099511627776, 1099511627776],"data_offsets":[0,4]}})", 4,
       absl::StatusCode::kDataLoss, "too large"},
      {R"({"__metadata__":{"step":3}})", 0, absl::StatusCode::kDataLoss, "not a string"},
      {R"({"a":{"shape":[1]}})", 0, absl::StatusCode::kDataLoss, "needs dtype"},
  };
  for (const Bad& c : cases) {
    auto r = ParseSafetensors(WithHeader(c.header, c.data_bytes));
    ASSERT_FALSE(r.ok()) << c.header;
    EXPECT_EQ(r.status().code(), c.code) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr(c.part));
  }
  EXPECT_EQ(ParseSafetensors("abc").status().code(), absl::StatusCode::kDataLoss);
  std::string huge(8, '\xff');
  EXPECT_THAT(ParseSafetensors(huge).status().message(), HasSubstr("exceeds"));
}

TEST(SafetensorsTest, TruncationsAndBitFlipsNeverCrash) {
  const std::string good = EncodeCheckpoint(Sample());
  for (size_t len = 0; len < good.size(); len += 3) {
    EXPECT_FALSE(DecodeCheckpoint(good.substr(0, len)).ok()) << len;
  }
  std::mt19937 gen(1);
  int detected = 0;
  for (int i = 0; i < 2000; ++i) {
    std::string bad = good;
    bad[gen() % bad.size()] ^= static_cast<char>(1 << (gen() % 8));
    detected += !DecodeCheckpoint(bad).ok();
  }
  // The checksum covers names, dtypes, shapes, metadata and data; only flips that keep the JSON
  // equivalent (e.g. in the padding) can go unnoticed: measured 1942 of 2000 caught.
  EXPECT_GT(detected, 1900);
}

TEST(CheckpointIoTest, ChecksumCatchesFlippedDataBits) {
  std::string bytes = EncodeCheckpoint(Sample());
  bytes[bytes.size() - 10] ^= 0x10;  // inside the tensor data
  auto r = DecodeCheckpoint(bytes);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("checksum"));
}

TEST(CheckpointIoTest, DurableWriteAndRead) {
  char dir[] = "/tmp/qtrain_store_XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string path = std::string(dir) + "/ckpt.safetensors";
  const std::string bytes = EncodeCheckpoint(Sample());
  ASSERT_TRUE(WriteFileDurably(path, bytes).ok());
  ASSERT_TRUE(WriteFileDurably(path, bytes).ok());  // overwrite
  auto read = ReadWholeFile(path, 1 << 20);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, bytes);
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0);  // no temporary left behind
  EXPECT_EQ(ReadWholeFile(path, 10).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ReadWholeFile(std::string(dir) + "/missing", 10).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_FALSE(WriteFileDurably("/nonexistent-dir/x", bytes).ok());
  std::remove(path.c_str());
  rmdir(dir);
}

}  // namespace
}  // namespace qtrain::store
