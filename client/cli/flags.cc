#include "client/cli/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, server, "",
          "qtrain-server address (default: $QTRAIN_SERVER, else 127.0.0.1:50051)");
ABSL_FLAG(std::string, tls_ca, "",
          "connect over TLS, trusting this PEM CA file (default: $QTRAIN_TLS_CA; \"system\": the "
          "system's roots)");
ABSL_FLAG(std::string, tls_cert, "",
          "PEM client certificate for a mutual-TLS server (default: $QTRAIN_TLS_CERT)");
ABSL_FLAG(std::string, tls_key, "", "PEM key of --tls_cert (default: $QTRAIN_TLS_KEY)");
ABSL_FLAG(std::string, token, "",
          "bearer token for a server with --auth_tokens (needs TLS); @FILE reads it from a file "
          "(default: $QTRAIN_TOKEN; prefer it or @FILE: a command line is visible to other users)");
ABSL_FLAG(std::string, tenant, "", "token new: the tenant the token acts for");
ABSL_FLAG(std::string, out, "",
          "export, ptq: the directory to write the exported model into (model.safetensors and "
          "config.json; model.onnx)");
ABSL_FLAG(std::string, qtypes, "",
          "sensitivity, ptq: mixed-precision candidates, most compressed first (e.g. int4,int8); "
          "default: the rules' own qtypes; float is always the last resort");
ABSL_FLAG(double, max_accuracy_drop, 0,
          "sensitivity, ptq: choose mixed precision within this absolute accuracy drop below the "
          "float model (0.01 = one point; 0: no search)");
ABSL_FLAG(double, max_loss_increase, 0,
          "sensitivity, ptq: choose mixed precision within this relative loss rise above the float "
          "model (0.02 = 2%; 0: no search)");
ABSL_FLAG(int64_t, calibration_batches, 16,
          "ptq: batches of --data (shuffled by --seed) that calibrate the static scales");
ABSL_FLAG(std::string, eval_data, "",
          "ptq: held-out data for the float vs PTQ comparison and the sensitivity analysis "
          "(default: --data)");
ABSL_FLAG(std::string, eval_split, "t10k", "ptq: IDX directory split of the held-out data");
ABSL_FLAG(std::string, exports, "compressed-tensors,onnx",
          "ptq: formats to write into --out (compressed-tensors, onnx)");
ABSL_FLAG(
    std::string, rules_out, "",
    "sensitivity: write the mixed-precision rules to this JSON file (for `qtrain rules set`)");
ABSL_FLAG(bool, skip_all_but_one, false,
          "sensitivity: skip the all-but-one pass (each op left float with the rest quantized)");
ABSL_FLAG(std::string, weights, "",
          "import: a safetensors file of float weights (a PyTorch state_dict, say)");
ABSL_FLAG(std::string, replicas, "",
          "rebalance: the replicas' own addresses behind the proxy (--server), comma-separated");
ABSL_FLAG(std::string, map, "",
          "import: JSON object (inline or a file) of qtrain module -> module name in the file, "
          "e.g. {\"Dense_0\": \"0\", \"head\": \"2\"}; unlisted modules use their path with '.'");
ABSL_FLAG(std::string, role, "trainer", "token new: admin, trainer or reader");
ABSL_FLAG(std::string, name, "", "token new: a label for the access file entry (who holds it)");
ABSL_FLAG(bool, json, false, "print JSON for scripts instead of text");
ABSL_FLAG(std::string, preset, "", "built-in model: mlp, cnn or transformer-lm");
ABSL_FLAG(std::string, model, "", "model spec: a JSON file or inline JSON");
ABSL_FLAG(std::string, arch, "",
          "named architecture whose state dict imports as is: torchvision:resnet18, "
          "torchvision:resnet34, torchvision:resnet50, torchvision:mobilenet_v2, "
          "torchvision:vit_b_16 (vit_b_32, vit_l_16, vit_l_32, vit_h_14)");
ABSL_FLAG(std::string, hf, "",
          "a Hugging Face model directory (config.json, model.safetensors): Llama, Qwen2, "
          "Mistral, GPT-2 and BERT, built from the config by the server; --seq_len sets the "
          "length, --arch_options=pad_id=N the padding id");
ABSL_FLAG(int64_t, num_classes, 1000, "--arch: the builder's num_classes");
ABSL_FLAG(std::string, arch_options, "",
          "--arch: any builder option as name=value,... (torchvision's parameter names, e.g. "
          "dropout=0,round_nearest=8 for mobilenet_v2, representation_size=768 for vit_b_16)");
ABSL_FLAG(double, width_mult, 1.0, "--arch=torchvision:mobilenet_v2: the width multiplier");
ABSL_FLAG(int64_t, image_size, 224, "--arch=torchvision:vit_*: the image side (input_shape)");
ABSL_FLAG(int64_t, patch_size, 16, "--arch=torchvision:vit_*: the patch side");
ABSL_FLAG(int64_t, num_layers, 12, "--arch=torchvision:vit_*: encoder blocks");
ABSL_FLAG(int64_t, num_heads, 12, "--arch=torchvision:vit_*: attention heads");
ABSL_FLAG(int64_t, hidden_dim, 768, "--arch=torchvision:vit_*: the token width");
ABSL_FLAG(int64_t, mlp_dim, 3072, "--arch=torchvision:vit_*: the MLP's hidden width");
ABSL_FLAG(std::string, rules, "",
          "rules: float, qat-int8, qt-int8, srq-int8, qat-int4, w8a8, 8da4w, w4a16, a JSON file or "
          "inline JSON");
ABSL_FLAG(std::string, optimizer, "adamw",
          "optimizer: adamw, sgd, momentum (SGD, 0.9), a JSON file or inline JSON");
ABSL_FLAG(double, lr, 1e-3, "learning rate of the optimizer presets");
ABSL_FLAG(uint64_t, seed, 1, "seed for initialisation (session create) and shuffling");
ABSL_FLAG(int, world_size, 1,
          "session create: ranks of a data-parallel session (the server and its --dp_peers; "
          "docs/scaling.md)");
ABSL_FLAG(std::string, backend, "",
          "session create: the backend its ops run on (qtrain info lists them; default: the "
          "server's)");
ABSL_FLAG(int, classes, 10, "classes of the mlp / cnn presets");
ABSL_FLAG(std::string, data, "", "IDX directory or images file, .csv[.gz] file, or text file");
ABSL_FLAG(std::string, format, "",
          "data format: idx, csv or text (default: from --data); export: compressed-tensors "
          "(the default) or onnx");
ABSL_FLAG(std::string, split, "train", "IDX directory split: train or t10k");
ABSL_FLAG(std::string, labels, "", "IDX labels file (default: derived from the images file)");
ABSL_FLAG(std::string, label_column, "",
          "CSV label column: name or index (negative from the end), or none");
ABSL_FLAG(std::string, targets, "",
          "CSV label column: class (indices) or float (regression, MSE loss); default: class when "
          "every value is an index");
ABSL_FLAG(std::string, input_shape, "",
          "shape of one example, e.g. 28,28,1 (CSV data; mlp / cnn presets)");
ABSL_FLAG(float, input_scale, 0, "multiply input features (default: 1/255 for IDX, 1 for CSV)");
ABSL_FLAG(int64_t, seq_len, 64,
          "text data, transformer-lm and --hf: tokens per example (--hf default: "
          "min(max_position_embeddings, 512))");
ABSL_FLAG(std::string, tokenizer, "",
          "text data: a SentencePiece model (Llama-2's tokenizer.model) that tokenizes it "
          "(default: byte tokens)");
ABSL_FLAG(std::string, sequences, "",
          "text data: windows (default: the token stream cut into full --seq_len windows) or "
          "lines (each non-empty line one sequence, cut to --seq_len and right-padded with the "
          "session's pad id)");
ABSL_FLAG(std::string, token_dtype, "", ".bin token files: uint16 (default, nanoGPT) or uint32");
ABSL_FLAG(int64_t, limit, 0, "use the first N examples only (0: all)");
ABSL_FLAG(int64_t, batch_size, 128, "examples per batch");
ABSL_FLAG(int, epochs, 1, "passes over the data (train)");
ABSL_FLAG(int64_t, steps, 0, "stop after N batches (0: all)");
ABSL_FLAG(bool, shuffle, true, "shuffle the training data each epoch");
ABSL_FLAG(bool, update_stats, false, "eval: also update the quant stats");
ABSL_FLAG(std::string, progress, "auto",
          "auto (a bar on a terminal, lines otherwise), bar, lines or none");
ABSL_FLAG(int64_t, log_every, 0, "progress lines every N batches (0: about 10 lines)");
ABSL_FLAG(std::string, service, "", "health: the service to check (\"\": the server)");
ABSL_FLAG(double, timeout, 5, "health: seconds to wait for the server");
ABSL_FLAG(bool, verbose, false, "info: every candidate kernel and why it was (not) chosen");
