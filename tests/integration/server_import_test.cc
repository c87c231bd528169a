// ImportWeights on the real server: float weights named and laid out as PyTorch saves them give a
// session whose Forward matches the same model computed here; module_map renames modules; a file
// that does not fit the spec is refused with every missing, extra and mis-shaped tensor named,
// and nothing is created.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/store/safetensors.h"
#include "tests/integration/server_fixture.h"

namespace qtrain {
namespace {

using ::testing::HasSubstr;

// Deterministic values of a shape (row-major), as a PyTorch state_dict entry.
Tensor Values(const Shape& shape, int seed) {
  Tensor t = Tensor::Empty(DType::kF32, shape);
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  for (float& v : t.span<float>()) v = u(rng);
  return t;
}

class ServerImportTest : public ServerTest {
 protected:
  grpc::Status Import(const std::string& id, const std::string& spec,
                      const std::map<std::string, Tensor>& tensors,
                      const std::map<std::string, std::string>& module_map, v1::Session* out) {
    store::SafetensorsFile file;
    file.tensors = tensors;
    const std::string bytes = store::SerializeSafetensors(file);
    grpc::ClientContext ctx;
    auto writer = stub_->ImportWeights(&ctx, out);
    v1::ImportRequest first;
    first.set_session_id(id);
    *first.mutable_model() = Json<v1::ModelSpec>(spec);
    for (const auto& [k, v] : module_map) (*first.mutable_module_map())[k] = v;
    // Two chunks: the configuration with the first half of the bytes, then the rest.
    first.set_data(bytes.substr(0, bytes.size() / 2));
    writer->Write(first);
    v1::ImportRequest rest;
    rest.set_data(bytes.substr(bytes.size() / 2));
    writer->Write(rest);
    writer->WritesDone();
    return writer->Finish();
  }

  Tensor Forward(const std::string& id, const Tensor& x) {
    v1::ForwardRequest req;
    req.set_session_id(id);
    *req.mutable_inputs() = rpc::ToWire(x);
    v1::ForwardResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status s = stub_->Forward(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    absl::StatusOr<Tensor> y = rpc::FromWire(resp.outputs(), "outputs", 1 << 20);
    return y.ok() ? *y : Tensor();
  }
};

TEST_F(ServerImportTest, PyTorchLinearLayersGiveTheSameOutputs) {
  // torch.nn.Sequential(Linear(6, 32), ReLU(), Linear(32, 3)): "0.*" and "2.*".
  const std::map<std::string, Tensor> torch = {{"0.weight", Values({32, 6}, 1)},
                                               {"0.bias", Values({32}, 2)},
                                               {"2.weight", Values({3, 32}, 3)},
                                               {"2.bias", Values({3}, 4)}};
  v1::Session session;
  const grpc::Status s =
      Import("mlp", kSpec, torch, {{"Dense_0", "0"}, {"Dense_1", "2"}}, &session);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(session.session_id(), "mlp");
  EXPECT_EQ(session.step(), 0);
  EXPECT_EQ(session.parameters(), 32 * 6 + 32 + 3 * 32 + 3);
  const Tensor x = Values({5, 6}, 9);
  const Tensor y = Forward("mlp", x);
  ASSERT_EQ(y.shape(), (Shape{5, 3}));
  // y = relu(x W0ᵀ + b0) W1ᵀ + b1, with PyTorch's (out, in) weights.
  const float* w0 = torch.at("0.weight").data<float>();
  const float* b0 = torch.at("0.bias").data<float>();
  const float* w1 = torch.at("2.weight").data<float>();
  const float* b1 = torch.at("2.bias").data<float>();
  for (int n = 0; n < 5; ++n) {
    std::vector<double> h(32);
    for (int o = 0; o < 32; ++o) {
      double acc = b0[o];
      for (int i = 0; i < 6; ++i) acc += double(x.data<float>()[n * 6 + i]) * w0[o * 6 + i];
      h[o] = std::max(acc, 0.0);
    }
    for (int o = 0; o < 3; ++o) {
      double acc = b1[o];
      for (int i = 0; i < 32; ++i) acc += h[i] * w1[o * 32 + i];
      EXPECT_NEAR(y.data<float>()[n * 3 + o], acc, 1e-5) << n << "," << o;
    }
  }
}

TEST_F(ServerImportTest, ConvolutionKernelsAreConvertedFromOihw) {
  // One 3x3 VALID convolution over a 3x3x2 image: one output position per channel.
  constexpr char kConv[] = R"({"input": {"shape": [3, 3, 2]}, "body": {"sequential": {"layers": [
      {"conv2d": {"features": 4, "kernel_size": [3, 3], "padding": "VALID"}}]}},
      "loss": {"kind": "MSE"}})";
  const std::map<std::string, Tensor> torch = {{"Conv_0.weight", Values({4, 2, 3, 3}, 5)},
                                               {"Conv_0.bias", Values({4}, 6)}};
  v1::Session session;
  const grpc::Status s = Import("conv", kConv, torch, {}, &session);
  ASSERT_TRUE(s.ok()) << s.error_message();
  const Tensor x = Values({1, 3, 3, 2}, 7);  // NHWC
  const Tensor y = Forward("conv", x);
  ASSERT_EQ(y.numel(), 4);
  const float* w = torch.at("Conv_0.weight").data<float>();  // OIHW
  for (int o = 0; o < 4; ++o) {
    double acc = torch.at("Conv_0.bias").data<float>()[o];
    for (int h = 0; h < 3; ++h) {
      for (int v = 0; v < 3; ++v) {
        for (int c = 0; c < 2; ++c) {
          acc += double(x.data<float>()[(h * 3 + v) * 2 + c]) * w[((o * 2 + c) * 3 + h) * 3 + v];
        }
      }
    }
    EXPECT_NEAR(y.data<float>()[o], acc, 1e-5) << o;
  }
  // A float export gives the kernel back in PyTorch's OIHW layout, bit for bit.
  v1::ExportRequest req;
  req.set_session_id("conv");
  req.set_format("compressed-tensors");
  grpc::ClientContext ctx;
  auto reader = stub_->ExportQuantized(&ctx, req);
  std::string bytes;
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) bytes += chunk.data();
  ASSERT_TRUE(reader->Finish().ok());
  absl::StatusOr<store::SafetensorsFile> file = store::ParseSafetensors(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const Tensor& back = file->tensors.at("Conv_0.weight");
  ASSERT_EQ(back.shape(), (Shape{4, 2, 3, 3}));
  EXPECT_EQ(std::memcmp(back.raw(), torch.at("Conv_0.weight").raw(), back.nbytes()), 0);
}

TEST_F(ServerImportTest, AFileThatDoesNotFitIsRefusedNamingEveryTensor) {
  const std::map<std::string, Tensor> torch = {{"Dense_0.weight", Values({32, 5}, 1)},
                                               {"Dense_0.bias", Values({32}, 2)},
                                               {"Dense_1.bias", Values({3}, 4)},
                                               {"classifier.weight", Values({3, 32}, 3)}};
  v1::Session session;
  grpc::Status s = Import("bad", kSpec, torch, {}, &session);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(),
              HasSubstr("missing: Dense_1.weight (for Dense_1/kernel, [32, 3])"));
  EXPECT_THAT(s.error_message(),
              HasSubstr("mis-shaped: Dense_0.weight is [32, 5], Dense_0/kernel needs [6, 32]"));
  EXPECT_THAT(s.error_message(), HasSubstr("not used by the model: classifier.weight"));
  s = Import("bad", kSpec, torch, {{"Dense_9", "x"}}, &session);
  EXPECT_THAT(s.error_message(), HasSubstr("module_map names modules the model does not have: "
                                           "Dense_9"));
  // Not a safetensors file at all.
  grpc::ClientContext ctx;
  auto writer = stub_->ImportWeights(&ctx, &session);
  v1::ImportRequest req;
  req.set_session_id("bad");
  *req.mutable_model() = Json<v1::ModelSpec>(kSpec);
  req.set_data("not safetensors");
  writer->Write(req);
  writer->WritesDone();
  s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS);  // as a corrupt checkpoint upload
  EXPECT_THAT(s.error_message(), HasSubstr("not a safetensors file"));
  // None of the refused imports left a session behind.
  v1::ListSessionsResponse list;
  grpc::ClientContext lctx;
  ASSERT_TRUE(stub_->ListSessions(&lctx, {}, &list).ok());
  EXPECT_EQ(list.sessions_size(), 0);
}

// Issue 20: a later ImportRequest carries bytes only; whatever else it sets is refused, not
// dropped.
TEST_F(ServerImportTest, LaterImportMessagesCarryBytesOnly) {
  const std::map<std::string, Tensor> torch = {{"Dense_0.weight", Values({32, 6}, 1)},
                                               {"Dense_0.bias", Values({32}, 2)},
                                               {"Dense_1.weight", Values({3, 32}, 3)},
                                               {"Dense_1.bias", Values({3}, 4)}};
  store::SafetensorsFile file;
  file.tensors = torch;
  const std::string bytes = store::SerializeSafetensors(file);
  for (const char* field : {"rules", "optimizer", "seed", "session_id"}) {
    grpc::ClientContext ctx;
    v1::Session session;
    auto writer = stub_->ImportWeights(&ctx, &session);
    v1::ImportRequest first;
    first.set_session_id("later");
    *first.mutable_model() = Json<v1::ModelSpec>(kSpec);
    first.set_data(bytes.substr(0, 100));
    writer->Write(first);
    v1::ImportRequest rest;
    rest.set_data(bytes.substr(100));
    if (std::string(field) == "rules") {
      *rest.mutable_rules() = Json<v1::RuleSet>(R"({"rules": [{"weight_qtype": "int8"}]})");
    } else if (std::string(field) == "optimizer") {
      *rest.mutable_optimizer() = Json<v1::OptimizerConfig>(R"({"sgd": {}})");
    } else if (std::string(field) == "seed") {
      rest.set_seed(7);
    } else {
      rest.set_session_id("other");
    }
    writer->Write(rest);
    writer->WritesDone();
    const grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << field;
    EXPECT_THAT(s.error_message(), HasSubstr("only the first ImportRequest")) << field;
  }
  v1::ListSessionsResponse list;
  grpc::ClientContext lctx;
  ASSERT_TRUE(stub_->ListSessions(&lctx, {}, &list).ok());
  EXPECT_EQ(list.sessions_size(), 0);
}

// Issue 20: ExportQuantized's module_map is checked as ImportWeights' is.
TEST_F(ServerImportTest, ExportModuleMapIsChecked) {
  v1::CreateSessionRequest create;
  create.set_session_id("ex");
  *create.mutable_model() = Json<v1::ModelSpec>(kSpec);
  v1::Session session;
  grpc::ClientContext cctx;
  ASSERT_TRUE(stub_->CreateSession(&cctx, create, &session).ok());
  auto export_with = [&](const std::map<std::string, std::string>& map) {
    v1::ExportRequest req;
    req.set_session_id("ex");
    req.set_format("compressed-tensors");
    for (const auto& [k, v] : map) (*req.mutable_module_map())[k] = v;
    grpc::ClientContext ctx;
    auto reader = stub_->ExportQuantized(&ctx, req);
    v1::CheckpointChunk chunk;
    while (reader->Read(&chunk)) {
    }
    return reader->Finish();
  };
  grpc::Status s = export_with({{"Dense_9", "x"}});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("module_map names modules the model does not have: "
                                           "Dense_9 (it has: Dense_0, Dense_1)"));
  std::map<std::string, std::string> garbage;
  for (int i = 0; i < 10000; ++i) garbage[absl::StrCat("m", i)] = absl::StrCat(i);
  s = export_with(garbage);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("(10000 in all)"));
  EXPECT_LT(s.error_message().size(), 1000u);
  s = export_with({{"Dense_0", "fc"}, {"Dense_1", "fc"}});
  EXPECT_THAT(s.error_message(), HasSubstr("gives two modules one name: Dense_0 and Dense_1"));
  s = export_with({{"Dense_0", "Dense_1"}});  // Dense_1's own default name
  EXPECT_THAT(s.error_message(), HasSubstr("gives two modules one name"));
  s = export_with({{"Dense_0", ""}});
  EXPECT_THAT(s.error_message(), HasSubstr("module_map maps to an empty name: Dense_0"));
  EXPECT_TRUE(export_with({{"Dense_0", "fc1"}, {"Dense_1", "fc2"}}).ok());
}

// Issue 20: a spec is bounded in breadth as in depth.
TEST_F(ServerImportTest, ASpecOfTooManyModulesIsRefused) {
  v1::CreateSessionRequest create;
  create.set_session_id("wide");
  *create.mutable_model() = Json<v1::ModelSpec>(kSpec);
  auto* layers = create.mutable_model()->mutable_body()->mutable_sequential()->mutable_layers();
  for (int i = 0; i < 10001; ++i) layers->Add()->mutable_dropout();
  v1::Session session;
  grpc::ClientContext ctx;
  const grpc::Status s = stub_->CreateSession(&ctx, create, &session);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("more than 10000 modules"));
}

// Export: the int8 file holds exactly what the server computes with. An int8 forward computed
// here from the exported tensors alone (quantize x with input_scale, integer dot with the int8
// weights, rescale) matches the server's SRQ Forward.
TEST_F(ServerImportTest, CompressedTensorsExportReproducesTheServersInt8Forward) {
  const std::map<std::string, Tensor> torch = {{"0.weight", Values({32, 6}, 1)},
                                               {"0.bias", Values({32}, 2)},
                                               {"2.weight", Values({3, 32}, 3)},
                                               {"2.bias", Values({3}, 4)}};
  const std::map<std::string, std::string> names = {{"Dense_0", "0"}, {"Dense_1", "2"}};
  v1::Session session;
  ASSERT_TRUE(Import("q", kSpec, torch, names, &session).ok());
  auto export_bytes = [&](grpc::Status* status) {
    v1::ExportRequest req;
    req.set_session_id("q");
    req.set_format("compressed-tensors");
    for (const auto& [k, v] : names) (*req.mutable_module_map())[k] = v;
    grpc::ClientContext ctx;
    auto reader = stub_->ExportQuantized(&ctx, req);
    std::string bytes;
    v1::CheckpointChunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    *status = reader->Finish();
    return bytes;
  };
  v1::UpdateRulesRequest update;
  update.set_session_id("q");
  *update.mutable_rules() = Json<v1::RuleSet>(
      R"({"rules": [{"weight_qtype": "int8", "act_qtype": "int8", "act_static_scale": true}]})");
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->UpdateRules(&ctx, update, &session).ok());
  }
  grpc::Status status;
  export_bytes(&status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(status.error_message(), HasSubstr("Dense_0: no activation statistics yet"));
  {
    grpc::ClientContext ctx;
    auto stream = stub_->Calibrate(&ctx);
    for (int i = 0; i < 4; ++i) {
      v1::CalibrateRequest req;
      req.set_session_id("q");
      *req.mutable_inputs() = rpc::ToWire(Values({16, 6}, 20 + i));
      stream->Write(req);
    }
    stream->WritesDone();
    v1::CalibrateResponse resp;
    while (stream->Read(&resp)) {
    }
    ASSERT_TRUE(stream->Finish().ok());
  }
  const std::string bytes = export_bytes(&status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  absl::StatusOr<store::SafetensorsFile> file = store::ParseSafetensors(bytes);
  ASSERT_TRUE(file.ok()) << file.status();
  const nlohmann::json config = nlohmann::json::parse(file->metadata.at("quantization_config"));
  EXPECT_EQ(config["quant_method"], "compressed-tensors");
  EXPECT_EQ(config["format"], "int-quantized");
  const nlohmann::json& group = config["config_groups"]["group_0"];
  EXPECT_EQ(group["targets"], nlohmann::json({"0", "2"}));
  EXPECT_EQ(group["weights"]["strategy"], "channel");
  EXPECT_EQ(group["input_activations"]["strategy"], "tensor");
  EXPECT_EQ(group["input_activations"]["dynamic"], false);
  for (const char* layer : {"0", "2"}) {
    const std::string l = layer;
    EXPECT_EQ(file->tensors.at(l + ".weight").dtype(), DType::kS8);
    EXPECT_EQ(file->tensors.at(l + ".weight_scale").dim(1), 1);
    EXPECT_EQ(file->tensors.at(l + ".input_scale").numel(), 1);
    EXPECT_EQ(file->tensors.at(l + ".bias").dtype(), DType::kF32);
  }
  // The int8 forward from the file alone.
  auto layer = [&](const std::string& l, const std::vector<double>& in, int64_t n, int64_t k,
                   bool relu) {
    const Tensor& w = file->tensors.at(l + ".weight");  // (out, k) int8
    const int64_t out = w.dim(0);
    const float s_in = file->tensors.at(l + ".input_scale").data<float>()[0];
    const float* s_w = file->tensors.at(l + ".weight_scale").data<float>();
    const float* b = file->tensors.at(l + ".bias").data<float>();
    std::vector<double> y(n * out);
    for (int64_t r = 0; r < n; ++r) {
      std::vector<int32_t> xq(k);
      for (int64_t i = 0; i < k; ++i) {
        xq[i] = static_cast<int32_t>(
            std::clamp(std::nearbyint(static_cast<float>(in[r * k + i]) / s_in), -128.0f, 127.0f));
      }
      for (int64_t o = 0; o < out; ++o) {
        int64_t acc = 0;
        for (int64_t i = 0; i < k; ++i) acc += int64_t{xq[i]} * w.data<int8_t>()[o * k + i];
        double v = static_cast<double>(acc) * s_in * s_w[o] + b[o];
        y[r * out + o] = relu ? std::max(v, 0.0) : v;
      }
    }
    return y;
  };
  const Tensor x = Values({8, 6}, 30);
  const std::vector<double> h =
      layer("0", {x.span<float>().begin(), x.span<float>().end()}, 8, 6, true);
  const std::vector<double> y = layer("2", h, 8, 32, false);
  const Tensor served = Forward("q", x);
  for (int i = 0; i < 8 * 3; ++i) EXPECT_NEAR(served.data<float>()[i], y[i], 1e-4) << i;
  // Formats other than compressed-tensors are refused by name.
  v1::ExportRequest onnx;
  onnx.set_session_id("q");
  onnx.set_format("tflite");
  grpc::ClientContext ctx;
  auto reader = stub_->ExportQuantized(&ctx, onnx);
  v1::CheckpointChunk chunk;
  while (reader->Read(&chunk)) {
  }
  status = reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("\"tflite\""));
}

// The ONNX export of a token model with attention; module maps are refused (nothing is sent).
TEST_F(ServerImportTest, OnnxExportsAttentionAndRefusesModuleMaps) {
  auto export_onnx = [&](const std::string& id, bool with_map) {
    v1::ExportRequest req;
    req.set_session_id(id);
    req.set_format("onnx");
    if (with_map) (*req.mutable_module_map())["Dense_0"] = "0";
    grpc::ClientContext ctx;
    auto reader = stub_->ExportQuantized(&ctx, req);
    std::string bytes;
    v1::CheckpointChunk chunk;
    while (reader->Read(&chunk)) bytes += chunk.data();
    const grpc::Status s = reader->Finish();
    if (!s.ok()) {
      EXPECT_TRUE(bytes.empty());
    }
    return std::make_pair(s, bytes);
  };
  v1::CreateSessionRequest lm;
  lm.set_session_id("lm");
  *lm.mutable_model() = Json<v1::ModelSpec>(R"({"input": {"kind": "TOKENS", "shape": [8]},
      "body": {"sequential": {"layers": [{"embedding": {"num_embeddings": 16, "features": 8}},
        {"name": "attn", "attention": {"num_heads": 2}}, {"linear": {"features": 16}}]}}})");
  v1::Session created;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->CreateSession(&ctx, lm, &created).ok());
  auto [attention, graph] = export_onnx("lm", false);
  ASSERT_TRUE(attention.ok()) << attention.error_message();
  EXPECT_NE(graph.find("attn/query/kernel"), std::string::npos);
  EXPECT_EQ(graph.find("attn/causal_mask"), std::string::npos);  // the spec is not causal
  Create("plain");
  auto [mapped, nothing] = export_onnx("plain", true);
  EXPECT_EQ(mapped.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(mapped.error_message(), HasSubstr("module_map"));
  // A float session exports as plain ONNX: a ModelProto that starts with ir_version (field 1).
  auto [ok, bytes] = export_onnx("plain", false);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  ASSERT_GT(bytes.size(), 100u);
  EXPECT_EQ(bytes[0], 0x08);
  EXPECT_NE(bytes.find("logits"), std::string::npos);
}

TEST_F(ServerImportTest, TheFirstMessageMustCarryTheSpec) {
  grpc::ClientContext ctx;
  v1::Session session;
  auto writer = stub_->ImportWeights(&ctx, &session);
  v1::ImportRequest req;
  req.set_data("x");
  writer->Write(req);
  writer->WritesDone();
  const grpc::Status s = writer->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("must set model"));
}

// A named architecture instead of a spec: both, an unknown name or an unknown option are
// refused by name and leave no session.
TEST_F(ServerImportTest, ArchitecturesAreCheckedByName) {
  auto create = [&](const std::function<void(v1::CreateSessionRequest&)>& edit) {
    grpc::ClientContext ctx;
    v1::CreateSessionRequest req;
    req.set_session_id("arch");
    req.mutable_architecture()->set_name("torchvision:resnet18");
    req.mutable_architecture()->add_input_shape(32);
    req.mutable_architecture()->add_input_shape(32);
    req.mutable_architecture()->add_input_shape(3);
    edit(req);
    v1::Session session;
    const grpc::Status s = stub_->CreateSession(&ctx, req, &session);
    return std::make_pair(s, session);
  };
  auto [both, unused1] = create([](auto& r) { r.mutable_model()->set_name("x"); });
  EXPECT_THAT(both.error_message(), HasSubstr("not both"));
  auto [unknown, unused2] =
      create([](auto& r) { r.mutable_architecture()->set_name("torchvision:resnet19"); });
  EXPECT_THAT(unknown.error_message(), HasSubstr("torchvision:resnet18, torchvision:resnet34"));
  auto [option, unused3] =
      create([](auto& r) { (*r.mutable_architecture()->mutable_options())["width"] = 2; });
  EXPECT_THAT(option.error_message(), HasSubstr("unknown option width"));
  for (const grpc::Status& s : {both, unknown, option}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  }
  auto [ok, session] =
      create([](auto& r) { (*r.mutable_architecture()->mutable_options())["num_classes"] = 10; });
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(session.parameters(), 11181642);  // torchvision's resnet18(num_classes=10)
  EXPECT_EQ(session.non_trainable(), 9600);   // running_mean + running_var of 20 BatchNorms
  EXPECT_EQ(session.model().name(), "torchvision:resnet18");
  grpc::ClientContext ctx;
  v1::ListSessionsResponse list;
  ASSERT_TRUE(stub_->ListSessions(&ctx, {}, &list).ok());
  ASSERT_EQ(list.sessions_size(), 1);
  EXPECT_EQ(list.sessions(0).non_trainable(), 9600);
}

}  // namespace
}  // namespace qtrain
