// ImportWeights on the real server: float weights named and laid out as PyTorch saves them give a
// session whose Forward matches the same model computed here; module_map renames modules; a file
// that does not fit the spec is refused with every missing, extra and mis-shaped tensor named,
// and nothing is created.
#include <cmath>
#include <map>
#include <random>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

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

}  // namespace
}  // namespace qtrain
