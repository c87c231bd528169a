// Every model family end to end on the guarded backend (kernels/backend/guarded_backend.h), whose
// tensor memory is PROT_NONE outside its own op calls: QAT and QT training steps, rule updates,
// Calibrate (with its quant stats), Evaluate, Forward, a sensitivity analysis, checkpoints (saved
// to the data directory after every change, downloaded, uploaded), exports and a server restart
// that restores the sessions from disk, through the real server. Any read or write of tensor data
// by engine, store or rpc code outside a backend op faults and fails the test. Each result must
// equal, bit for bit, that of the same session on the reference backend — whose loops the
// guarded backend runs — so the test also proves nothing was skipped or computed elsewhere.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "server/store/safetensors.h"
#include "tests/integration/server_fixture.h"

namespace qtrain {
namespace {

struct Family {
  const char* name;
  // The session's model (a spec or a named architecture).
  void (*model)(v1::CreateSessionRequest& req);
  // Batch `seed`: inputs and targets of the model.
  v1::Batch (*batch)(int seed);
};

// Deterministic values in [-1, 1).
float Wave(int64_t i, int seed) { return std::sin(0.37f * static_cast<float>(i) + 1.3f * seed); }

v1::Batch Images(const Shape& shape, int classes, int seed) {
  Tensor x = Tensor::Empty(DType::kF32, shape);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = Wave(i, seed);
  Tensor y = Tensor::Empty(DType::kS32, {shape[0]});
  for (int64_t i = 0; i < shape[0]; ++i) y.data<int32_t>()[i] = (i + seed) % classes;
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

// Token ids in [1, vocab) with the last `pad` positions of each row set to 0 (a pad id where
// the model has one); labels are the ids themselves (next-token models) or one class per row.
v1::Batch Tokens(int64_t n, int64_t t, int vocab, int pad, int classes, int seed) {
  Tensor x = Tensor::Empty(DType::kS32, {n, t});
  for (int64_t i = 0; i < x.numel(); ++i) {
    const bool padded = i % t >= t - pad;
    x.data<int32_t>()[i] = padded ? 0 : 1 + static_cast<int32_t>((i * 7 + seed * 3) % (vocab - 1));
  }
  Tensor y = classes > 0 ? Tensor::Empty(DType::kS32, {n}) : Tensor(x);
  if (classes > 0) {
    for (int64_t i = 0; i < n; ++i) y.data<int32_t>()[i] = (i + seed) % classes;
  }
  v1::Batch b;
  *b.mutable_inputs() = rpc::ToWire(x);
  *b.mutable_targets() = rpc::ToWire(y);
  return b;
}

void Arch(v1::CreateSessionRequest& req, const char* name,
          std::initializer_list<std::pair<const char*, double>> options, Shape input) {
  v1::Architecture* a = req.mutable_architecture();
  a->set_name(name);
  for (const auto& [k, v] : options) (*a->mutable_options())[k] = v;
  for (int64_t d : input) a->add_input_shape(d);
}

void Hf(v1::CreateSessionRequest& req, const char* config, int64_t tokens) {
  v1::Architecture* a = req.mutable_architecture();
  a->set_name("hf");
  a->set_hf_config(config);
  a->add_input_shape(tokens);
}

const Family kFamilies[] = {
    {"mlp", [](v1::CreateSessionRequest& r) { *r.mutable_model() = Json<v1::ModelSpec>(kSpec); },
     [](int seed) { return MakeBatch(seed, 8); }},
    {"cnn",
     [](v1::CreateSessionRequest& r) {
       *r.mutable_model() = Json<v1::ModelSpec>(R"({"input": {"shape": [8, 8, 2]},
           "body": {"sequential": {"layers": [
             {"conv2d": {"features": 4, "kernel_size": [3, 3], "padding": "SAME"}},
             {"batch_norm": {}}, {"activation": {"kind": "RELU"}},
             {"pool": {"kind": "MAX", "window": [2, 2], "padding": "VALID"}},
             {"flatten": {}}, {"dropout": {"rate": 0.25}}, {"linear": {"features": 3}}]}}})");
     },
     [](int seed) {
       return Images({4, 8, 8, 2}, 3, seed);
     }},
    {"transformer",
     [](v1::CreateSessionRequest& r) {
       *r.mutable_model() = Json<v1::ModelSpec>(R"({"input": {"kind": "TOKENS", "shape": [6],
           "pad_id": 0}, "body": {"sequential": {"layers": [
             {"embedding": {"num_embeddings": 16, "features": 8}},
             {"residual": {"body": {"sequential": {"layers": [{"layer_norm": {}},
               {"attention": {"num_heads": 2, "causal": true}}]}}}},
             {"residual": {"body": {"sequential": {"layers": [{"layer_norm": {}},
               {"linear": {"features": 16}}, {"activation": {"kind": "GELU"}},
               {"dropout": {"rate": 0.1}}, {"linear": {"features": 8}}]}}}},
             {"linear": {"features": 16}}]}}, "loss": {"shift_labels": true}})");
     },
     [](int seed) { return Tokens(3, 6, 16, 1, 0, seed); }},
    {"resnet18",
     [](v1::CreateSessionRequest& r) {
       Arch(r, "torchvision:resnet18", {{"num_classes", 5}}, {16, 16, 3});
     },
     [](int seed) {
       return Images({2, 16, 16, 3}, 5, seed);
     }},
    {"mobilenet_v2",
     [](v1::CreateSessionRequest& r) {
       Arch(r, "torchvision:mobilenet_v2", {{"num_classes", 4}, {"width_mult", 0.25}}, {16, 16, 3});
     },
     [](int seed) {
       return Images({2, 16, 16, 3}, 4, seed);
     }},
    {"vit",
     [](v1::CreateSessionRequest& r) {
       Arch(r, "torchvision:vit_b_16",
            {{"num_classes", 3},
             {"image_size", 16},
             {"patch_size", 8},
             {"num_layers", 1},
             {"num_heads", 2},
             {"hidden_dim", 16},
             {"mlp_dim", 24}},
            {});
     },
     [](int seed) {
       return Images({2, 16, 16, 3}, 3, seed);
     }},
    {"llama",
     [](v1::CreateSessionRequest& r) {
       Hf(r, R"({"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
                 "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 4,
                 "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0})",
          6);
     },
     [](int seed) { return Tokens(2, 6, 32, 0, 0, seed); }},
    {"gpt2",
     [](v1::CreateSessionRequest& r) {
       Hf(r, R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 32,
                 "n_positions": 8, "n_embd": 16, "n_layer": 1, "n_head": 2,
                 "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5})",
          6);
     },
     [](int seed) { return Tokens(2, 6, 32, 0, 0, seed); }},
    {"bert",
     [](v1::CreateSessionRequest& r) {
       Hf(r, R"({"model_type": "bert", "architectures": ["BertForSequenceClassification"],
                 "vocab_size": 32, "hidden_size": 16, "num_hidden_layers": 1,
                 "num_attention_heads": 2, "intermediate_size": 24, "hidden_act": "gelu",
                 "max_position_embeddings": 8, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
                 "pad_token_id": 0, "num_labels": 3})",
          6);
     },
     [](int seed) { return Tokens(2, 6, 32, 2, 3, seed); }},
};

std::string Bits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return absl::StrCat(v, "/", b);
}

constexpr char kQatRules[] =
    R"({"rules": [{"module_path": ".*", "weight_qtype": "int8", "act_qtype": "int8"}]})";
constexpr char kQtRules[] = R"({"rules": [{"module_path": ".*", "weight_qtype": "int8",
    "act_qtype": "int8", "bwd_qtype": "int8"}]})";
constexpr char kSrqRules[] = R"({"rules": [{"module_path": ".*", "weight_qtype": "int8",
    "act_qtype": "int8", "act_static_scale": true, "act_batch_axes": {"axes": [0, 1]}}]})";

class GuardedBackendTest : public ::testing::TestWithParam<Family> {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/qtrain_guarded_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    Start();
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
    std::filesystem::remove_all(dir_);
  }
  void Start() {
    server::ServerOptions o;
    o.listen = "127.0.0.1:0";
    o.data_dir = dir_;
    o.sessions.max_sessions = 4;
    auto s = server::RunningServer::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    stub_ = v1::Trainer::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                                     grpc::InsecureChannelCredentials()));
  }

  // Forward of the family's batch 5 on session `id`.
  grpc::Status Forward(const std::string& id, v1::ForwardResponse& resp) {
    v1::ForwardRequest req;
    req.set_session_id(id);
    *req.mutable_inputs() = GetParam().batch(5).inputs();
    grpc::ClientContext ctx;
    return stub_->Forward(&ctx, req, &resp);
  }

  // The transcript of everything a session on `backend` answers, from creation to a restart.
  std::vector<std::string> Run(const std::string& backend) {
    const Family& f = GetParam();
    // Ids of one length ("mlp-g", "mlp-r"), named in exports: the same bytes once replaced.
    const std::string id = absl::StrCat(f.name, "-", backend.substr(0, 1));
    std::vector<std::string> out;
    auto note = [&](const std::string& what, const grpc::Status& s, const std::string& result) {
      out.push_back(absl::StrReplaceAll(
          absl::StrCat(what, ": ", s.error_code(), " ", s.error_message(), " ", result),
          {{id, absl::StrCat(f.name, "-x")}}));
    };
    {
      v1::CreateSessionRequest req;
      req.set_session_id(id);
      f.model(req);
      *req.mutable_rules() = Json<v1::RuleSet>(kQatRules);
      *req.mutable_optimizer() =
          Json<v1::OptimizerConfig>(R"({"adamw": {}, "schedule": {"learning_rate": 0.01}})");
      req.set_seed(11);
      req.set_backend(backend);
      v1::Session resp;
      grpc::ClientContext ctx;
      const grpc::Status s = stub_->CreateSession(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      note("create", s, resp.backend());
    }
    auto train = [&](int seed) {
      grpc::ClientContext ctx;
      auto stream = stub_->Train(&ctx);
      v1::TrainRequest req;
      req.set_session_id(id);
      *req.mutable_batch() = f.batch(seed);
      stream->Write(req);
      stream->WritesDone();
      v1::TrainResponse resp;
      std::string losses;
      while (stream->Read(&resp)) absl::StrAppend(&losses, Bits(resp.loss()), " ");
      const grpc::Status s = stream->Finish();
      EXPECT_TRUE(s.ok()) << s.error_message();
      note(absl::StrCat("train ", seed), s, losses);
    };
    auto rules = [&](const char* json) {
      v1::UpdateRulesRequest req;
      req.set_session_id(id);
      *req.mutable_rules() = Json<v1::RuleSet>(json);
      v1::Session resp;
      grpc::ClientContext ctx;
      const grpc::Status s = stub_->UpdateRules(&ctx, req, &resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      note("rules", s, "");
    };
    auto forward = [&]() {
      v1::ForwardResponse resp;
      const grpc::Status s = Forward(id, resp);
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_GT(resp.outputs().data().size(), 0u);
      note("forward", s, resp.outputs().SerializeAsString());
    };
    auto evaluate = [&]() {
      v1::EvaluateResponse resp;
      grpc::ClientContext ctx;
      auto writer = stub_->Evaluate(&ctx, &resp);
      v1::EvaluateRequest req;
      req.set_session_id(id);
      *req.mutable_batch() = f.batch(4);
      writer->Write(req);
      writer->WritesDone();
      const grpc::Status s = writer->Finish();
      EXPECT_TRUE(s.ok()) << s.error_message();
      note("evaluate", s, Bits(resp.loss()));
    };
    auto exports = [&](const char* format) {
      v1::ExportRequest req;
      req.set_session_id(id);
      req.set_format(format);
      grpc::ClientContext ctx;
      auto reader = stub_->ExportQuantized(&ctx, req);
      v1::CheckpointChunk chunk;
      std::string bytes;
      while (reader->Read(&chunk)) bytes += chunk.data();
      const grpc::Status s = reader->Finish();
      note(format, s, bytes);
      return s.ok();
    };

    train(0);
    rules(kQtRules);  // the integer backward
    train(1);
    rules(kSrqRules);
    {
      grpc::ClientContext ctx;
      auto stream = stub_->Calibrate(&ctx);
      v1::CalibrateRequest req;
      req.set_session_id(id);
      *req.mutable_inputs() = f.batch(2).inputs();
      stream->Write(req);
      stream->WritesDone();
      v1::CalibrateResponse resp, last;
      while (stream->Read(&resp)) last = resp;
      const grpc::Status s = stream->Finish();
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_GT(last.stats().stats_size(), 0);
      note("calibrate", s, last.stats().SerializeAsString());
    }
    train(3);  // static scales, the statistics updated
    evaluate();
    forward();
    {  // the float model against the quantized one on a held-out batch (EvaluateUnder)
      grpc::ClientContext ctx;
      auto stream = stub_->AnalyzeSensitivity(&ctx);
      v1::SensitivityRequest req;
      req.set_session_id(id);
      req.mutable_options()->set_skip_one_at_a_time(true);
      req.mutable_options()->set_skip_all_but_one(true);
      *req.mutable_batch() = f.batch(7);
      stream->Write(req);
      stream->WritesDone();
      v1::SensitivityResponse resp, last;
      while (stream->Read(&resp)) last = resp;
      const grpc::Status s = stream->Finish();
      EXPECT_TRUE(s.ok()) << s.error_message();
      EXPECT_TRUE(last.has_report());
      note("sensitivity", s, last.SerializeAsString());
    }
    // Quantized exports (GPT-2's Conv1D layers and position table refuse both: the same
    // refusal on both backends), then a float one every family takes.
    exports("onnx");
    exports("compressed-tensors");

    std::string checkpoint;
    {
      v1::DownloadCheckpointRequest req;
      req.set_session_id(id);
      grpc::ClientContext ctx;
      auto reader = stub_->DownloadCheckpoint(&ctx, req);
      v1::CheckpointChunk chunk;
      while (reader->Read(&chunk)) checkpoint += chunk.data();
      const grpc::Status s = reader->Finish();
      EXPECT_TRUE(s.ok()) << s.error_message();
      auto file = store::ParseSafetensors(checkpoint);
      EXPECT_TRUE(file.ok()) << file.status();
      std::string tensors;
      if (file.ok()) {
        for (const auto& [name, t] : file->tensors) {
          absl::StrAppend(&tensors, name, "=",
                          std::string(static_cast<const char*>(t.raw()), t.nbytes()), ";");
        }
      }
      note("download", s, tensors);
    }
    train(6);  // moves away from the checkpoint...
    {
      grpc::ClientContext ctx;
      v1::CheckpointInfo info;
      auto writer = stub_->UploadCheckpoint(&ctx, &info);
      v1::CheckpointChunk chunk;
      chunk.set_session_id(id);
      chunk.set_data(checkpoint);
      writer->Write(chunk);
      writer->WritesDone();
      const grpc::Status s = writer->Finish();
      EXPECT_TRUE(s.ok()) << s.error_message();
      note("upload", s, absl::StrCat(info.step()));
    }
    forward();  // ...and back to it
    rules("{}");
    EXPECT_TRUE(exports("compressed-tensors")) << out.back().substr(0, 300);
    return out;
  }

  std::string dir_;
  std::unique_ptr<server::RunningServer> server_;
  std::unique_ptr<v1::Trainer::Stub> stub_;
};

TEST_P(GuardedBackendTest, EveryOperationMatchesTheReferenceBackend) {
  std::vector<std::string> guarded = Run("guarded");
  std::vector<std::string> reference = Run("reference");
  ASSERT_EQ(guarded.size(), reference.size());
  for (size_t i = 0; i < guarded.size(); ++i) {
    if (absl::StartsWith(guarded[i], "create")) continue;  // names its backend
    EXPECT_TRUE(guarded[i] == reference[i])
        << "step " << i << " differs: " << absl::CHexEscape(guarded[i].substr(0, 160)) << " vs "
        << absl::CHexEscape(reference[i].substr(0, 160));
  }
  // A restart restores both sessions from their checkpoints in the data directory, the guarded
  // one onto guarded memory again, and they still agree.
  server_->Shutdown();
  server_.reset();
  Start();
  const Family& f = GetParam();
  std::string outputs[2];
  for (int i = 0; i < 2; ++i) {
    v1::ForwardResponse resp;
    const grpc::Status s = Forward(absl::StrCat(f.name, i == 0 ? "-g" : "-r"), resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    outputs[i] = resp.outputs().SerializeAsString();
  }
  EXPECT_TRUE(outputs[0] == outputs[1]);
}

INSTANTIATE_TEST_SUITE_P(Families, GuardedBackendTest, ::testing::ValuesIn(kFamilies),
                         [](const ::testing::TestParamInfo<Family>& info) {
                           return std::string(info.param.name);
                         });

}  // namespace
}  // namespace qtrain
