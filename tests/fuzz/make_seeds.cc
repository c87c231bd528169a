// qtrain-fuzz-seeds OUTDIR: writes each fuzz target's seed corpus, OUTDIR/<target>/NNN, from
// the configurations users start from (the CLI's presets) and checkpoints of real sessions, so
// that the seeds follow the formats as they change. Run by `make fuzz` and by the replay tests.
#include <google/protobuf/util/json_util.h>
#include <sys/stat.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "client/cli/presets.h"
#include "server/cluster/dp_protocol.h"
#include "server/rpc/tensor_convert.h"
#include "server/store/checkpoint_io.h"
#include "server/store/session_checkpoint.h"
#include "tests/fuzz/fuzz_limits.h"

namespace {

using namespace qtrain;

class Corpus {
 public:
  Corpus(std::string root, std::string target) : dir_(root + "/" + target) {
    ::mkdir(root.c_str(), 0755);
    ::mkdir(dir_.c_str(), 0755);
  }
  void Add(const std::string& bytes) {
    const std::string path = dir_ + "/seed_" + std::to_string(n_++);
    std::ofstream(path, std::ios::binary) << bytes;
  }
  int size() const { return n_; }

 private:
  std::string dir_;
  int n_ = 0;
};

template <typename M>
M FromJson(const std::string& json) {
  M m;
  if (!google::protobuf::util::JsonStringToMessage(json, &m).ok()) {
    std::fprintf(stderr, "qtrain-fuzz-seeds: bad seed JSON: %s\n", json.c_str());
    std::exit(1);
  }
  return m;
}

std::vector<v1::ModelSpec> Models() {
  std::vector<v1::ModelSpec> out;
  cli::PresetOptions mlp;
  mlp.classes = 4;
  mlp.input_shape = {16};
  cli::PresetOptions cnn;
  cnn.input_shape = {8, 8, 1};
  cli::PresetOptions lm;
  lm.seq_len = 8;
  for (const auto& [name, options] : std::vector<std::pair<std::string, cli::PresetOptions>>{
           {"mlp", mlp}, {"cnn", cnn}, {"transformer-lm", lm}}) {
    absl::StatusOr<v1::ModelSpec> spec = cli::ModelPreset(name, options);
    if (spec.ok()) out.push_back(*spec);
  }
  out.push_back(FromJson<v1::ModelSpec>(R"({"input": {"shape": [4]}, "loss": {"kind": "MSE"},
      "body": {"sequential": {"layers": [{"linear": {"features": 8}},
        {"residual": {"body": {"sequential": {"layers": [{"layer_norm": {}},
          {"linear": {"features": 8}}, {"dropout": {"rate": 0.1}}]}}}},
        {"rms_norm": {}}, {"linear": {"features": 2, "no_bias": true}}]}}})"));
  return out;
}

std::vector<v1::RuleSet> Rules() {
  std::vector<v1::RuleSet> out;
  for (const char* preset :
       {"float", "qat-int8", "qt-int8", "srq-int8", "qat-int4", "w8a8", "8da4w", "w4a16"}) {
    absl::StatusOr<v1::RuleSet> r = cli::RulesPreset(preset);
    if (r.ok()) out.push_back(*r);
  }
  for (const char* json : {
           R"({"rules": [{"module_path": "Dense_0", "op_names": ["dot_general"],
                "weight_qtype": "int8", "act_qtype": "int8", "tile_size": 8}]})",
           R"({"rules": [{"weight_qtype": "int4", "act_qtype": "int8", "tile_fraction": 0.5,
                "weight_calibration_method": "rms,3", "act_calibration_method": "minmax"}]})",
           R"({"rules": [{"weight_qtype": "float8_e4m3fn", "act_qtype": "float8_e4m3fn",
                "bwd_qtype": "int8", "bwd_stochastic_rounding": "uniform",
                "channelwise_noise_axes": {"axes": [0]}}]})",
           R"({"rules": [{"module_path": ".*attn.*", "weight_qtype": "int8", "act_qtype": "int8",
                "bwd_qtype": "int8", "bwd_weight_grad_tile_size": 2,
                "disable_channelwise_axes": true}, {"weight_qtype": "int8"}]})",
           R"({"rules": [{"weight_qtype": "uint8", "act_qtype": "uint8",
                "act_static_scale": true, "act_batch_axes": {"axes": [0, 1]}}]})",
       }) {
    out.push_back(FromJson<v1::RuleSet>(json));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: qtrain-fuzz-seeds OUTDIR\n");
    return 2;
  }
  const std::string root = argv[1];
  const std::vector<v1::ModelSpec> models = Models();
  const std::vector<v1::RuleSet> rules = Rules();

  Corpus specs(root, "fuzz_model_spec");
  for (const v1::ModelSpec& m : models) specs.Add(m.SerializeAsString());

  Corpus rule_seeds(root, "fuzz_rules");
  for (size_t i = 0; i < rules.size(); ++i) {
    rule_seeds.Add(std::string(1, static_cast<char>(i % 3)) + rules[i].SerializeAsString());
  }

  // Checkpoints of real sessions, one per model and rule set pair that builds, after a step.
  Corpus safetensors(root, "fuzz_safetensors");
  Corpus checkpoints(root, "fuzz_checkpoint");
  for (size_t i = 0; i < models.size(); ++i) {
    const v1::RuleSet& r = rules[i % rules.size()];
    std::unique_ptr<engine::Trainer> t =
        fuzz::SmallTrainer(models[i], r, FromJson<v1::OptimizerConfig>("{}"), 7);
    if (t == nullptr) continue;
    const std::string bytes = store::EncodeCheckpoint(store::CheckpointFromTrainer(*t).value());
    safetensors.Add(bytes);
    checkpoints.Add(bytes);
  }
  store::SafetensorsFile plain;
  plain.metadata["format"] = "pt";
  plain.tensors["w"] = Tensor::FromFloats({2, 2}, {1.0f, -2.0f, 0.5f, 3.0f});
  safetensors.Add(store::SerializeSafetensors(plain));

  Corpus tensors(root, "fuzz_tensor_convert");
  tensors.Add(std::string(1, '\0') +
              rpc::ToWire(Tensor::FromFloats({2, 3}, {1, 2, 3, 4, 5, 6})).SerializeAsString());
  tensors.Add(std::string(1, '\0') +
              rpc::ToWire(Tensor::Zeros(DType::kS32, {4})).SerializeAsString());
  tensors.Add(std::string(1, '\0') +
              rpc::ToWire(Tensor::Zeros(DType::kU8, {2, 2})).SerializeAsString());
  v1::Batch batch;
  *batch.mutable_inputs() = rpc::ToWire(Tensor::FromFloats({2, 2}, {0.5f, 1, -1, 2}));
  *batch.mutable_targets() = rpc::ToWire(Tensor::Zeros(DType::kS32, {2}));
  tensors.Add(std::string(1, '\1') + batch.SerializeAsString());

  // Hugging Face config.json texts: a tiny Llama (llama3 rope, grouped KV heads) and Qwen2.
  Corpus hf(root, "fuzz_hf_config");
  hf.Add(R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 32,
    "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-5,
    "rope_theta": 500000.0, "max_position_embeddings": 64, "hidden_act": "silu",
    "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 16}})");
  hf.Add(R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 32,
    "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
    "num_attention_heads": 2, "num_key_value_heads": 1, "use_sliding_window": false,
    "sliding_window": 4096, "max_window_layers": 1, "rope_scaling": {"type": "linear", "factor": 2}})");

  // Session ids, authorization headers and access files.
  Corpus access(root, "fuzz_access");
  for (const char* id : {"run1", "team-a/run1", "team-b/run1", "", "team-a/", "../x", "a/b/c"}) {
    access.Add(std::string(1, '\0') + id);
  }
  for (const char* header : {"Bearer qt_abc", "bearer x", "Basic abc", "team-a"}) {
    access.Add(std::string(1, '\1') + header);
  }
  access.Add(std::string(1, '\2') + R"({"tokens": [{"sha256": ")" + std::string(64, 'a') +
             R"(", "tenant": "team-a", "role": "trainer", "name": "ci"}],
                "tenants": {"team-a": {"max_sessions": 2, "max_streams": 1}}})");

  // Messages a data-parallel leader sends its ranks: a setup, a state, a shard, a leave.
  Corpus dp(root, "fuzz_dp_message");
  {
    cluster::Message setup;
    setup.kind = cluster::MessageKind::kSetup;
    setup.seed = 7;
    setup.blobs = {models[0].SerializeAsString(), "{}", "onednn"};
    dp.Add(cluster::Encode(setup));
    cluster::Message state;
    state.kind = cluster::MessageKind::kState;
    state.step = 3;
    state.blobs = {rules[1].SerializeAsString()};
    state.tensors.emplace_back("params/Dense_0/kernel", Tensor::FromFloats({2, 2}, {1, 2, 3, 4}));
    dp.Add(cluster::Encode(state));
    cluster::Message shard;
    shard.kind = cluster::MessageKind::kTrain;
    shard.weight = 0.5f;
    shard.tensors.emplace_back("inputs", Tensor::FromFloats({1, 3}, {0.5f, -1, 2}));
    shard.tensors.emplace_back("targets", Tensor::Zeros(DType::kS32, {1}));
    dp.Add(cluster::Encode(shard));
    cluster::Message leave;
    dp.Add(cluster::Encode(leave));
  }

  std::printf(
      "qtrain-fuzz-seeds: %d model specs, %d rule sets, %d checkpoints, %d safetensors, "
      "%d tensors in %s\n",
      specs.size(), rule_seeds.size(), checkpoints.size(), safetensors.size(), tensors.size(),
      root.c_str());
  return checkpoints.size() == 0 ? 1 : 0;
}
