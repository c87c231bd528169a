#include "server/cluster/dp_protocol.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace qtrain::cluster {
namespace {

constexpr uint32_t kMagic = 0x51445031;  // "QDP1"
constexpr int kMaxRank = 8;

class Writer {
 public:
  template <typename T>
  void Put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(v));
  }
  void Bytes(const void* p, size_t n) {
    Put<uint64_t>(n);
    out_.append(static_cast<const char*>(p), n);
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

class Reader {
 public:
  explicit Reader(const std::string& in) : in_(in) {}
  template <typename T>
  bool Get(T* v) {
    if (in_.size() - at_ < sizeof(T)) return false;
    std::memcpy(v, in_.data() + at_, sizeof(T));
    at_ += sizeof(T);
    return true;
  }
  bool Bytes(std::string* out) {
    uint64_t n = 0;
    if (!Get(&n) || n > in_.size() - at_) return false;
    out->assign(in_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool Into(void* p, uint64_t n) {
    uint64_t got = 0;
    if (!Get(&got) || got != n || n > in_.size() - at_) return false;
    std::memcpy(p, in_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool done() const { return at_ == in_.size(); }

 private:
  const std::string& in_;
  size_t at_ = 0;
};

absl::Status Bad(const std::string& what) {
  return absl::DataLossError(absl::StrCat("data-parallel message: ", what));
}

}  // namespace

std::string Encode(const Message& m) {
  Writer w;
  w.Put(kMagic);
  w.Put(static_cast<uint8_t>(m.kind));
  w.Put(m.step);
  w.Put(m.seed);
  w.Put(m.weight);
  w.Put(static_cast<uint32_t>(m.blobs.size()));
  for (const std::string& b : m.blobs) w.Bytes(b.data(), b.size());
  w.Put(static_cast<uint32_t>(m.tensors.size()));
  for (const auto& [name, t] : m.tensors) {
    w.Bytes(name.data(), name.size());
    w.Put(static_cast<uint8_t>(t.dtype()));
    w.Put(static_cast<uint8_t>(t.rank()));
    for (int a = 0; a < t.rank(); ++a) w.Put(t.dim(a));
    w.Bytes(t.raw(), t.nbytes());
  }
  return w.Take();
}

absl::StatusOr<Message> Decode(const std::string& bytes) {
  Reader r(bytes);
  Message m;
  uint32_t magic = 0;
  uint8_t kind = 0;
  if (!r.Get(&magic) || magic != kMagic) return Bad("not a qtrain data-parallel message");
  if (!r.Get(&kind) || kind < 1 || kind > 4) return Bad(absl::StrCat("kind ", kind));
  m.kind = static_cast<MessageKind>(kind);
  uint32_t blobs = 0, tensors = 0;
  if (!r.Get(&m.step) || !r.Get(&m.seed) || !r.Get(&m.weight) || !r.Get(&blobs)) {
    return Bad("truncated header");
  }
  for (uint32_t i = 0; i < blobs; ++i) {
    std::string b;
    if (!r.Bytes(&b)) return Bad(absl::StrCat("truncated blob ", i));
    m.blobs.push_back(std::move(b));
  }
  if (!r.Get(&tensors)) return Bad("truncated tensor count");
  for (uint32_t i = 0; i < tensors; ++i) {
    std::string name;
    uint8_t dtype = 0, rank = 0;
    if (!r.Bytes(&name) || !r.Get(&dtype) || !r.Get(&rank)) {
      return Bad(absl::StrCat("truncated tensor ", i));
    }
    if (dtype > static_cast<uint8_t>(DType::kU8) || rank > kMaxRank) {
      return Bad(absl::StrCat("tensor ", name, ": dtype ", dtype, ", rank ", rank));
    }
    Shape shape(rank);
    int64_t numel = 1;
    for (int64_t& d : shape) {
      if (!r.Get(&d) || d < 0 || (d > 0 && numel > (int64_t{1} << 40) / d)) {
        return Bad(absl::StrCat("tensor ", name, ": bad shape"));
      }
      numel *= d;
    }
    if (static_cast<uint64_t>(numel) * DTypeSize(static_cast<DType>(dtype)) > bytes.size()) {
      return Bad(absl::StrCat("tensor ", name, ": ", numel, " elements in a shorter message"));
    }
    Tensor t = Tensor::Empty(static_cast<DType>(dtype), shape);
    if (!r.Into(t.raw(), t.nbytes())) return Bad(absl::StrCat("tensor ", name, ": truncated data"));
    m.tensors.emplace_back(std::move(name), std::move(t));
  }
  if (!r.done()) return Bad("trailing bytes");
  return m;
}

Tensor SliceRows(const Tensor& t, int64_t begin, int64_t end) {
  Shape shape = t.shape();
  const int64_t rows = shape[0];
  shape[0] = end - begin;
  Tensor out = Tensor::Empty(t.dtype(), shape);
  const size_t row_bytes = rows > 0 ? t.nbytes() / static_cast<size_t>(rows) : 0;
  std::memcpy(out.raw(), static_cast<const char*>(t.raw()) + begin * row_bytes, out.nbytes());
  return out;
}

}  // namespace qtrain::cluster
