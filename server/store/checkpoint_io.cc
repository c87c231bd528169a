#include "server/store/checkpoint_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain::store {
namespace {

// CRC-32 over everything the file says except the checksum itself: metadata, each tensor's
// name, dtype and shape, then the tensor bytes in name order.
std::string Crc32Hex(const SafetensorsFile& file) {
  std::string described;
  for (const auto& [key, value] : file.metadata) {
    if (key != kChecksumKey) {
      absl::StrAppend(&described, key, "=", value, "\n");
    }
  }
  for (const auto& [name, t] : file.tensors) {
    absl::StrAppend(&described, name, ":", DTypeName(t.dtype()), ShapeString(t.shape()), "\n");
  }
  uLong crc = crc32(0L, reinterpret_cast<const Bytef*>(described.data()),
                    static_cast<uInt>(described.size()));
  for (const auto& [name, t] : file.tensors) {  // the order SerializeSafetensors writes
    const auto* p = static_cast<const Bytef*>(t.raw());
    size_t left = t.nbytes();
    while (left > 0) {
      const uInt chunk = static_cast<uInt>(std::min<size_t>(left, 1u << 30));
      crc = crc32(crc, p, chunk);
      p += chunk;
      left -= chunk;
    }
  }
  return absl::StrCat(absl::Hex(crc, absl::kZeroPad8));
}

absl::Status ErrnoError(absl::string_view what, const std::string& path) {
  const int e = errno;
  const std::string msg = absl::StrCat(what, " ", path, ": ", std::strerror(e));
  if (e == ENOSPC || e == EDQUOT) {
    return absl::ResourceExhaustedError(msg);
  }
  if (e == ENOENT) {
    return absl::NotFoundError(msg);
  }
  return absl::InternalError(msg);
}

}  // namespace

std::string EncodeCheckpoint(SafetensorsFile file, std::string* crc32) {
  file.metadata[kChecksumKey] = Crc32Hex(file);
  if (crc32 != nullptr) *crc32 = file.metadata[kChecksumKey];
  return SerializeSafetensors(file);
}

absl::StatusOr<SafetensorsFile> DecodeCheckpoint(absl::string_view bytes) {
  QTRAIN_ASSIGN_OR_RETURN(SafetensorsFile file, ParseSafetensors(bytes));
  auto it = file.metadata.find(kChecksumKey);
  if (it != file.metadata.end() && it->second != Crc32Hex(file)) {
    return absl::DataLossError(absl::StrCat("checkpoint checksum mismatch: header says ",
                                            it->second, ", data has ", Crc32Hex(file)));
  }
  return file;
}

absl::Status WriteFileDurably(const std::string& path, absl::string_view bytes) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    return ErrnoError("cannot create", tmp);
  }
  size_t written = 0;
  while (written < bytes.size()) {
    const ssize_t n = ::write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      absl::Status s = ErrnoError("cannot write", tmp);
      ::close(fd);
      ::unlink(tmp.c_str());
      return s;
    }
    written += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    absl::Status s = ErrnoError("cannot fsync", tmp);
    ::close(fd);
    ::unlink(tmp.c_str());
    return s;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    absl::Status s = ErrnoError("cannot rename onto", path);
    ::unlink(tmp.c_str());
    return s;
  }
  const size_t slash = path.rfind('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {  // make the rename itself durable
    ::fsync(dfd);
    ::close(dfd);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return ErrnoError("cannot open", path);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    absl::Status s = ErrnoError("cannot stat", path);
    ::close(fd);
    return s;
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return absl::ResourceExhaustedError(
        absl::StrCat(path, " is ", st.st_size, " bytes; the limit is ", max_bytes));
  }
  std::string out(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      break;
    }
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  if (got != out.size()) {
    return absl::DataLossError(absl::StrCat(path, " changed while reading"));
  }
  return out;
}

}  // namespace qtrain::store
