// The C++ client library against the real server on 127.0.0.1:0: every call, the server's errors
// as absl::Status, checkpoint files round trip.
#include "qtrain/client.h"

#include <unistd.h>
#include <cmath>

#include <cstdio>
#include <fstream>
#include <string>

#include <gmock/gmock.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include "server/rpc/tensor_convert.h"
#include "server/server_main.h"
#include "server/store/safetensors.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

v1::Batch MakeBatch(int seed) {
  Tensor x = Tensor::Empty(DType::kF32, {8, 4});
  Tensor y = Tensor::Empty(DType::kS32, {8});
  for (int i = 0; i < 32; ++i) x.data<float>()[i] = std::cos(0.7f * i + seed);
  for (int i = 0; i < 8; ++i) y.data<int32_t>()[i] = (i + seed) % 2;
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

TEST(ClientTest, EveryCallAndErrorsAsStatus) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = server::RunningServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", (*server)->port()));

  v1::CreateSessionRequest req;
  req.set_session_id("c");
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(
                  R"({"input": {"shape": [4]}, "body": {"sequential": {"layers": [
                      {"linear": {"features": 2}}]}}})",
                  req.mutable_model())
                  .ok());
  ASSERT_TRUE(client->CreateSession(req).ok());

  int sent = 0;
  std::vector<int64_t> steps;
  ASSERT_TRUE(client
                  ->Train(
                      "c",
                      [&](v1::Batch* b) {
                        if (sent == 5) return false;
                        *b = MakeBatch(sent++);
                        return true;
                      },
                      [&](const v1::TrainResponse& r) { steps.push_back(r.step()); })
                  .ok());
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5}));
  // A stream with no batch still names its session (and succeeds).
  EXPECT_TRUE(client
                  ->Train(
                      "c", [](v1::Batch*) { return false; }, nullptr)
                  .ok());

  int evaluated = 0;
  auto eval = client->Evaluate("c", [&](v1::Batch* b) {
    if (evaluated == 2) return false;
    *b = MakeBatch(evaluated++);
    return true;
  });
  ASSERT_TRUE(eval.ok()) << eval.status();
  EXPECT_EQ(eval->examples(), 16);

  ASSERT_TRUE(client
                  ->UpdateRules("c",
                                [] {
                                  v1::RuleSet r;
                                  auto* rule = r.add_rules();
                                  rule->set_weight_qtype("int8");
                                  rule->set_act_qtype("int8");
                                  rule->set_act_static_scale(true);
                                  return r;
                                }())
                  .ok());
  int calibrated = 0;
  auto stats = client->Calibrate("c", [&](v1::Tensor* t) {
    if (calibrated == 3) return false;
    *t = MakeBatch(calibrated++).inputs();
    return true;
  });
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->stats_size(), 1);
  EXPECT_EQ(stats->stats(0).count(), 3);
  auto again = client->GetQuantStats("c");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->stats(0).count(), 3);

  auto out = client->Forward("c", MakeBatch(0).inputs());
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->shape(), ::testing::ElementsAre(8, 2));

  char path[] = "/tmp/qtrain_client_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  close(fd);
  auto bytes = client->DownloadCheckpoint("c", path);
  ASSERT_TRUE(bytes.ok()) << bytes.status();
  EXPECT_GT(*bytes, 100);
  auto info = client->UploadCheckpoint("copy", path);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->step(), 5);
  auto copy_out = client->Forward("copy", MakeBatch(0).inputs());
  ASSERT_TRUE(copy_out.ok());
  EXPECT_EQ(copy_out->data(), out->data());
  std::remove(path);

  // The server's errors, code and message.
  auto missing = client->GetSession("nope");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("\"nope\""));
  EXPECT_EQ(client->SaveCheckpoint("c").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(client->UploadCheckpoint("x", "/nonexistent").status().code(),
            absl::StatusCode::kNotFound);
  auto list = client->ListSessions();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->sessions_size(), 2);
  EXPECT_TRUE(client->DeleteSession("copy").ok());
  EXPECT_EQ(client->DeleteSession("copy").code(), absl::StatusCode::kNotFound);
  (*server)->Shutdown();
}

// A one-layer Llama in Hugging Face's layout (config.json + model.safetensors, (out, in) linear
// weights): ImportHf builds it from the config and takes the weights by their HF names.
TEST(ClientTest, ImportsAHuggingFaceDirectory) {
  server::ServerOptions options;
  options.listen = "127.0.0.1:0";
  auto server = server::RunningServer::Start(options);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = client::Client::Connect(absl::StrCat("127.0.0.1:", (*server)->port()));
  char tmpl[] = "/tmp/qtrain_hf_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  std::ofstream(dir + "/config.json") << R"({"architectures": ["LlamaForCausalLM"],
      "model_type": "llama", "vocab_size": 32, "hidden_size": 16, "intermediate_size": 24,
      "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
      "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "torch_dtype": "float32"})";
  store::SafetensorsFile file;
  int seed = 0;
  auto put = [&](const std::string& name, Shape shape) {
    Tensor t = Tensor::Empty(DType::kF32, shape);
    for (float& v : t.span<float>()) v = 0.1f * std::sin(0.37f * static_cast<float>(seed++));
    file.tensors[name] = std::move(t);
  };
  const std::string layer = "model.layers.0.";
  put("model.embed_tokens.weight", {32, 16});
  put(layer + "input_layernorm.weight", {16});
  put(layer + "self_attn.q_proj.weight", {16, 16});
  put(layer + "self_attn.k_proj.weight", {8, 16});
  put(layer + "self_attn.v_proj.weight", {8, 16});
  put(layer + "self_attn.o_proj.weight", {16, 16});
  put(layer + "post_attention_layernorm.weight", {16});
  put(layer + "mlp.gate_proj.weight", {24, 16});
  put(layer + "mlp.up_proj.weight", {24, 16});
  put(layer + "mlp.down_proj.weight", {16, 24});
  put("model.norm.weight", {16});
  put("lm_head.weight", {32, 16});
  std::ofstream(dir + "/model.safetensors", std::ios::binary) << store::SerializeSafetensors(file);

  v1::ImportRequest first;
  first.set_session_id("hf");
  auto s = client->ImportHf(first, dir, 8);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->parameters(), 32 * 16 * 2 + 16 * 3 + 16 * 16 * 2 + 8 * 16 * 2 + 24 * 16 * 3);
  auto out = client->Forward("hf", rpc::ToWire(Tensor::Zeros(DType::kS32, {2, 8})));
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->shape_size(), 3);  // (N, T, vocab) logits
  EXPECT_EQ(out->shape(2), 32);

  // The same tensors in two shards and their index, as save_pretrained splits them.
  std::remove((dir + "/model.safetensors").c_str());
  store::SafetensorsFile shards[2];
  std::string weight_map;
  int i = 0;
  for (const auto& [name, t] : file.tensors) {
    const int shard = i++ % 2;
    shards[shard].tensors[name] = t;
    absl::StrAppend(&weight_map, weight_map.empty() ? "" : ",", "\"", name, "\": \"model-0000",
                    shard + 1, "-of-00002.safetensors\"");
  }
  for (int shard = 0; shard < 2; ++shard) {
    std::ofstream(absl::StrCat(dir, "/model-0000", shard + 1, "-of-00002.safetensors"),
                  std::ios::binary)
        << store::SerializeSafetensors(shards[shard]);
  }
  std::ofstream(dir + "/model.safetensors.index.json")
      << "{\"metadata\": {}, \"weight_map\": {" << weight_map << "}}";
  first.set_session_id("hf-sharded");
  auto sharded = client->ImportHf(first, dir, 8);
  ASSERT_TRUE(sharded.ok()) << sharded.status();
  auto again = client->Forward("hf-sharded", rpc::ToWire(Tensor::Zeros(DType::kS32, {2, 8})));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->data(), out->data());  // the same weights, bit for bit
  // A shard the index names but the directory lacks: NotFound naming it.
  std::remove((dir + "/model-00002-of-00002.safetensors").c_str());
  first.set_session_id("hf-broken");
  auto lacking = client->ImportHf(first, dir, 8);
  EXPECT_EQ(lacking.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(lacking.status().message(), HasSubstr("model-00002-of-00002.safetensors"));
  std::remove((dir + "/model-00001-of-00002.safetensors").c_str());
  std::remove((dir + "/model.safetensors.index.json").c_str());

  // Without its weights file: NotFound naming it.
  first.set_session_id("hf2");
  auto missing = client->ImportHf(first, dir, 8);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr("model.safetensors"));
  std::remove((dir + "/config.json").c_str());
  rmdir(dir.c_str());
  (*server)->Shutdown();
}

}  // namespace
}  // namespace qtrain
