#include "client/cli/command_table.h"

#include <algorithm>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/commands.h"

namespace qtrain::cli {
namespace {

// Output and connection flags that every command takes (so that scripts can pass them always).
const std::vector<std::string> kCommon = {"server", "tls_ca", "tls_cert", "tls_key",
                                          "token",  "json",   "progress"};

std::vector<std::string> Join(std::initializer_list<std::vector<std::string>> parts) {
  std::vector<std::string> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

const std::vector<std::string> kData = {
    "data",        "format",  "split", "labels",    "label_column", "targets",  "input_shape",
    "input_scale", "seq_len", "limit", "tokenizer", "token_dtype",  "sequences"};
const std::vector<std::string> kStream = {"batch_size", "steps", "log_every"};

constexpr char kHelpIndex[] =
    R"(qtrain — command-line client of qtrain-server (quantized training over gRPC)

usage: qtrain COMMAND [ARGS] [--flags]      (qtrain help COMMAND: its flags)

commands:
  health                          is the server SERVING? (--service, --timeout=5)
  info                            the server's CPU, ISA level, backends, devices, int8 kernels
                                  and float implementations (--verbose: every candidate and
                                  why it was or was not chosen)
  session create [ID]             new session from --preset=mlp|cnn|transformer-lm or
                                  --model=SPEC (JSON file or inline JSON); --rules, --optimizer=
                                  adamw|sgd|momentum|JSON (--lr=0.001), --seed; mlp/cnn:
                                  --classes, --input_shape; transformer-lm: --seq_len
  session get ID                  the session: step, parameters, quantized ops and their rules
  session list                    all sessions
  session delete ID               delete a session (and its data on the server)
  import [ID] --weights=FILE      new session from --preset/--model/--arch and float weights
                                  trained elsewhere (safetensors, PyTorch naming; --map renames
                                  modules; --arch=torchvision:resnet18 takes its state dict as is;
                                  --hf=DIR a Hugging Face Llama/Qwen2/Mistral/GPT-2/BERT directory)
  export ID --out=DIR             int8 model.safetensors + config.json (compressed-tensors) of a
                                  calibrated session; --map names the layers; --format=onnx:
                                  model.onnx (QDQ)
  ptq [ID] --weights=FILE         post-training quantization in one command: import, evaluate
                                  float, calibrate (--rules, default srq-int8), evaluate again,
                                  mixed precision within --max_accuracy_drop, export into --out
  rules set ID RULES              switch the rules between steps: float, qat-int8, qt-int8,
                                  srq-int8, qat-int4, w8a8, 8da4w, w4a16, JSON
  train ID --data=D               train for --epochs, or --steps batches (over as many passes
                                  as they need), of --batch_size;
                                  --rules=R switches the rules first
  eval ID --data=D                loss and accuracy (--update_stats also updates quant stats)
  calibrate ID --data=D           forward-only pass that collects SRQ statistics (ops under an
                                  act_static_scale rule), then the stats; --rules=srq-int8 first
  sensitivity ID --data=D         which quantized ops cost accuracy on held-out data; with
                                  --max_accuracy_drop, mixed precision (--rules_out writes it)
  stats ID                        quant stats: counts, qtypes, derived static scales
  forward ID --data=D             outputs of the first --batch_size examples (argmax per row)
  checkpoint save ID              durable checkpoint on the server (its data dir)
  checkpoint pull ID FILE         download the session's checkpoint (safetensors)
  checkpoint push ID FILE         upload a checkpoint into session ID (created when new)
  rebalance --replicas=A,B,...    after replicas were added or removed behind a routing proxy
                                  (--server): move each session to the replica it now routes to
  token new --tenant=T            a bearer token and its entry for the server's access file
                                  (--role=admin|trainer|reader, --name); no server needed
  token hash                      the SHA-256 of a token read from standard input

data (--data):
  an IDX directory (--split=train|t10k), e.g. /usr/share/datasets/fashion-mnist; an IDX images
  file of any name (--labels, else derived from the name); FILE.csv[.gz] (--label_column,
  --targets=float for regression, --input_shape, --input_scale); token ids in FILE.npy (1-D) or
  FILE.bin (nanoGPT: --token_dtype=uint16|uint32); any other file: text as byte tokens, or
  through a SentencePiece model (--tokenizer=tokenizer.model). Tokens go in windows of
  --seq_len, labelled with the next ids (with their own ids for an --hf causal LM, whose loss
  shifts them); --sequences=lines makes each non-empty line of text one sequence, cut to
  --seq_len and right-padded with the session's pad id (--arch_options=pad_id=N). Gzip is read
  transparently. --limit=N keeps the first N examples. A flag the format does not read is an
  error.

common flags (every command):
  --server=HOST:PORT   default $QTRAIN_SERVER, else 127.0.0.1:50051
  --tls_ca=CA.pem      TLS (system: the system's roots); --tls_cert/--tls_key for mutual TLS;
                       default $QTRAIN_TLS_CA, $QTRAIN_TLS_CERT, $QTRAIN_TLS_KEY
  --token=T|@FILE      bearer token of a server with --auth_tokens (TLS only); $QTRAIN_TOKEN
  --json               machine-readable output (errors too: {"error": {...}})
  --progress=auto|bar|lines|none   (streams also take --log_every=N)

exit codes:
  0 ok   1 other server error   2 usage or local file error   3 server unreachable
  4 no such session   5 session exists   6 request rejected (invalid argument, failed
  precondition, out of range)   7 server limit reached   8 health: not serving
  9 unauthenticated or permission denied
  130 Ctrl-C stopped a stream (what ran is kept and summarised)
)";

}  // namespace

const char* HelpIndex() { return kHelpIndex; }

std::string Wrap(const std::string& text, const std::string& indent, size_t width) {
  std::string out = indent;
  size_t column = indent.size();
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (column > indent.size() && column + 1 + word.size() > width) {
      absl::StrAppend(&out, "\n", indent);
      column = indent.size();
    } else if (column > indent.size()) {
      out += ' ';
      ++column;
    }
    absl::StrAppend(&out, word);
    column += word.size();
  }
  return out + "\n";
}

const std::vector<CommandSpec>& CommandSpecs() {
  static const auto* specs = new std::vector<CommandSpec>{
      {"health",
       "",
       0,
       0,
       "Is the server SERVING? Exit 8 when it answers otherwise.",
       {"service", "timeout"},
       Health},
      {"info",
       "",
       0,
       0,
       "The server's CPU, the ISA level its kernels dispatch at (QTRAIN_MAX_ISA on the server caps "
       "it), the backends sessions may run on, the devices and their memory budget, the int8 "
       "kernel chosen for each op and what runs each float op, with the candidates considered "
       "(--verbose).",
       {"verbose"},
       Info},
      {"rebalance",
       "",
       0,
       0,
       "After the replica count behind a routing proxy (--server) changed: moves every session "
       "of --replicas (their own addresses) to the replica the proxy now routes it to "
       "(checkpoint download, upload, check, then delete).",
       {"replicas"},
       Rebalance},
      {"session create",
       "[ID]",
       0,
       1,
       "A new session from a built-in --preset or a --model spec (the server picks an id when ID "
       "is omitted).",
       {"preset",      "model",      "arch",       "hf",         "num_classes", "arch_options",
        "width_mult",  "image_size", "patch_size", "num_layers", "num_heads",   "hidden_dim",
        "mlp_dim",     "rules",      "optimizer",  "lr",         "seed",        "classes",
        "input_shape", "seq_len",    "world_size", "backend"},
       SessionCreate},
      {"session get",
       "ID",
       1,
       1,
       "The session: step, parameters, quantized ops and their rules.",
       {},
       SessionGet},
      {"session list", "", 0, 0, "All sessions.", {}, SessionList},
      {"import",
       "[ID]",
       0,
       1,
       "A new session from --preset, --model or --arch and the float weights of a model "
       "trained elsewhere (--weights: safetensors with PyTorch naming and layouts); --map renames "
       "modules. --arch=torchvision:resnet18 (resnet34, resnet50, mobilenet_v2 (--width_mult), "
       "vit_b_16 (vit_b_32, vit_l_16, vit_l_32, vit_h_14; --image_size --patch_size "
       "--num_layers --num_heads --hidden_dim --mlp_dim); --num_classes, --arch_options, "
       "--input_shape=H,W,C) takes a torchvision state dict as it is. --hf=DIR takes a Hugging "
       "Face directory (config.json and model.safetensors; Llama, Qwen2, Mistral, GPT-2, BERT; "
       "--seq_len, --arch_options=pad_id=N) as it is. The server names every tensor that does not "
       "fit.",
       {"weights",     "map",          "preset",      "model",      "arch",       "hf",
        "num_classes", "arch_options", "width_mult",  "image_size", "patch_size", "num_layers",
        "num_heads",   "hidden_dim",   "mlp_dim",     "rules",      "optimizer",  "lr",
        "seed",        "classes",      "input_shape", "seq_len"},
       Import},
      {"export",
       "ID",
       1,
       1,
       "The session quantized for deployment, into --out=DIR: model.safetensors (int8 weights "
       "with per-channel scales and static input scales, in the compressed-tensors layout vLLM "
       "and Hugging Face read) and config.json (its quantization_config); with --format=onnx, "
       "model.onnx (QuantizeLinear / DequantizeLinear around every quantized op, for ONNX "
       "Runtime). Calibrate first; --map names the layers as in the original model.",
       {"out", "format", "map"},
       Export},
      {"ptq", "[ID]", 0, 1,
       "Post-training quantization of a float model made elsewhere, in one command: imports "
       "--weights (safetensors, PyTorch naming; --map) into a session of --preset / --model, "
       "evaluates it on held-out data (--eval_data, --eval_split), switches to --rules (default "
       "srq-int8), calibrates on --calibration_batches of --data, evaluates again side by side, "
       "with a budget (--max_accuracy_drop, --max_loss_increase) picks mixed precision over "
       "--qtypes, and exports --exports into --out.",
       Join({kData,
             {"weights",
              "map",
              "preset",
              "model",
              "arch",
              "num_classes",
              "arch_options",
              "width_mult",
              "image_size",
              "patch_size",
              "num_layers",
              "num_heads",
              "hidden_dim",
              "mlp_dim",
              "rules",
              "seed",
              "classes",
              "input_shape",
              "seq_len",
              "batch_size",
              "calibration_batches",
              "eval_data",
              "eval_split",
              "out",
              "exports",
              "qtypes",
              "max_accuracy_drop",
              "max_loss_increase",
              "skip_all_but_one"}}),
       Ptq},
      {"session delete",
       "ID",
       1,
       1,
       "Deletes a session and its checkpoint on the server.",
       {},
       SessionDelete},
      {"rules set",
       "ID [RULES]",
       1,
       2,
       "Switches the session's rules between steps: a preset (float, qat-int8, qt-int8, srq-int8, "
       "qat-int4; language models: w8a8, 8da4w, w4a16), a JSON file or inline JSON (or --rules).",
       {"rules"},
       RulesSet},
      {"train", "ID", 1, 1,
       "Trains on --data for --epochs, or --steps batches (over as many passes as they need); "
       "--rules switches the rules first.",
       Join({kData, kStream, {"epochs", "shuffle", "seed", "rules"}}), Train},
      {"eval", "ID", 1, 1,
       "Loss and accuracy over --data (the session's weights do not change; --update_stats also "
       "updates the quant stats).",
       Join({kData, kStream, {"update_stats"}}), Eval},
      {"calibrate", "ID", 1, 1,
       "A forward-only pass over --data that collects the statistics of ops under an "
       "act_static_scale rule, then prints them; --rules (e.g. srq-int8) switches the rules "
       "first.",
       Join({kData, kStream, {"shuffle", "seed", "rules"}}), Calibrate},
      {"sensitivity", "ID", 1, 1,
       "Which quantized ops cost accuracy, over held-out --data (e.g. --split=t10k): the float "
       "model, the model under --rules (default: the session's), each op quantized alone and "
       "each left float. With --max_accuracy_drop or --max_loss_increase it also picks the "
       "cheapest mixed precision within that budget (--qtypes: the candidates) and "
       "--rules_out writes its rules. The session does not change.",
       Join({kData,
             {"batch_size", "steps", "rules", "qtypes", "max_accuracy_drop", "max_loss_increase",
              "skip_all_but_one", "rules_out"}}),
       Sensitivity},
      {"stats", "ID", 1, 1, "Quant stats: counts, qtypes, derived static scales.", {}, Stats},
      {"forward", "ID", 1, 1,
       "Outputs for the first --batch_size examples of --data (argmax per row).",
       Join({kData, {"batch_size"}}), Forward},
      {"checkpoint save",
       "ID",
       1,
       1,
       "A durable checkpoint on the server (in its data dir).",
       {},
       CheckpointSave},
      {"checkpoint pull",
       "ID FILE",
       2,
       2,
       "Downloads the session's checkpoint (safetensors) into FILE.",
       {},
       CheckpointPull},
      {"token new",
       "",
       0,
       0,
       "A new random bearer token for --tenant with --role, and the entry that grants it, for the "
       "\"tokens\" list of the server's access file (--auth_tokens; it stores only the SHA-256). "
       "The token is printed once: hand it to its holder (QTRAIN_TOKEN), it is not kept anywhere.",
       {"tenant", "role", "name"},
       TokenNew},
      {"token hash",
       "",
       0,
       0,
       "The access-file entry fields for a token read from standard input (its SHA-256).",
       {},
       TokenHash},
      {"checkpoint push",
       "ID FILE",
       2,
       2,
       "Uploads a checkpoint file into session ID (created from the file when new).",
       {},
       CheckpointPush},
  };
  return *specs;
}

const CommandSpec* FindCommand(const std::string& name) {
  for (const CommandSpec& c : CommandSpecs()) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

std::string Usage(const CommandSpec& command) {
  return command.args.empty() ? command.name : absl::StrCat(command.name, " ", command.args);
}

std::vector<const CommandSpec*> CommandsInGroup(const std::string& group) {
  std::vector<const CommandSpec*> out;
  for (const CommandSpec& c : CommandSpecs()) {
    if (c.name.rfind(group + " ", 0) == 0) out.push_back(&c);
  }
  return out;
}

std::string CommandHelp(const CommandSpec& command) {
  std::string out = absl::StrCat("usage: qtrain ", Usage(command), " [--flags]\n\n",
                                 Wrap(command.help, "", 80), "\nflags:\n");
  std::vector<std::string> flags = command.flags;
  flags.insert(flags.end(), kCommon.begin(), kCommon.end());
  for (const std::string& name : flags) {
    const absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
    if (f == nullptr) continue;
    const std::string def = f->DefaultValue();
    absl::StrAppend(&out, "  --", name, def.empty() ? "" : absl::StrCat(" (default ", def, ")"),
                    "\n", Wrap(f->Help(), "      ", 80));
  }
  return out;
}

std::string CheckCommandFlags(const CommandSpec& command, const std::vector<std::string>& given) {
  for (const std::string& name : given) {
    if (std::find(kCommon.begin(), kCommon.end(), name) != kCommon.end()) continue;
    if (std::find(command.flags.begin(), command.flags.end(), name) != command.flags.end()) {
      continue;
    }
    std::vector<std::string> accepted = command.flags;
    accepted.insert(accepted.end(), kCommon.begin(), kCommon.end());
    return absl::StrCat("--", name, " does not apply to `qtrain ", command.name, "` (",
                        command.flags.empty() ? "it takes only" : "its flags:", " --",
                        absl::StrJoin(accepted, ", --"), ")");
  }
  return "";
}

}  // namespace qtrain::cli
