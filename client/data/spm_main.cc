// qtrain-spm: SentencePiece tokenization in its own process. Debian's libsentencepiece carries a
// private protobuf 3.14 whose version check aborts any process that also loads the system
// protobuf (every qtrain client does), so the client runs this helper instead of linking it.
//
//   qtrain-spm encode MODEL FILE   ids of FILE's text (gzip or plain) as little-endian int32 on
//                                  stdout; exit 0
//   qtrain-spm encode_lines MODEL FILE  per line of FILE (split at '\n'): its id count, then its
//                                  ids, all little-endian int32; exit 0
//   qtrain-spm train ARGS...       spm_train's flags (--input=F --model_prefix=P ...); exit 0
// On failure: the reason on stdout, exit 1 (2 for a usage error).
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace {

int Fail(const std::string& why) {
  std::fputs(why.c_str(), stdout);
  return 1;
}

bool ReadFile(const char* path, std::string* out) {
  gzFile f = gzopen(path, "rb");  // reads plain files too
  if (f == nullptr) return false;
  char buf[1 << 16];
  int n = 0;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out->append(buf, static_cast<size_t>(n));
  return gzclose(f) == Z_OK && n == 0;
}

void AppendId(int id, std::string* out) {
  const auto u = static_cast<uint32_t>(id);
  for (int b = 0; b < 4; ++b) out->push_back(static_cast<char>((u >> (8 * b)) & 0xff));
}

// Encodes FILE whole, or line by line when `lines`.
int Encode(const char* model, const char* file, bool lines) {
  sentencepiece::SentencePieceProcessor sp;
  if (const auto s = sp.Load(model); !s.ok()) return Fail(s.ToString());
  std::string text;
  if (!ReadFile(file, &text)) return Fail(std::string("cannot read ") + file);
  std::vector<std::string> pieces;
  if (!lines) {
    pieces.push_back(std::move(text));
  } else {
    size_t begin = 0;
    while (begin < text.size()) {
      size_t end = text.find('\n', begin);
      if (end == std::string::npos) end = text.size();
      size_t stop = end;
      if (stop > begin && text[stop - 1] == '\r') --stop;  // CRLF files
      pieces.push_back(text.substr(begin, stop - begin));
      begin = end + 1;
    }
  }
  std::string bytes;
  for (const std::string& piece : pieces) {
    std::vector<int> ids;
    if (const auto s = sp.Encode(piece, &ids); !s.ok()) return Fail(s.ToString());
    if (lines) AppendId(static_cast<int>(ids.size()), &bytes);
    for (int id : ids) AppendId(id, &bytes);
  }
  return std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size() ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string command = argc > 1 ? argv[1] : "";
  if (command == "encode" && argc == 4) return Encode(argv[2], argv[3], /*lines=*/false);
  if (command == "encode_lines" && argc == 4) return Encode(argv[2], argv[3], /*lines=*/true);
  if (command == "train" && argc > 2) {
    std::string args;
    for (int i = 2; i < argc; ++i) args += std::string(i > 2 ? " " : "") + argv[i];
    const auto s = sentencepiece::SentencePieceTrainer::Train(args);
    return s.ok() ? 0 : Fail(s.ToString());
  }
  std::fputs(
      "usage: qtrain-spm encode|encode_lines MODEL FILE | qtrain-spm train SPM_TRAIN_FLAGS...\n",
      stderr);
  return 2;
}
