#include "kernels/backend/backend.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"
#include "kernels/status_macros.h"

namespace qtrain {

absl::Status ValidateCopy(const char* what, const Tensor& src, const Device& src_device,
                          const Tensor& dst, const Device& dst_device) {
  if (src.dtype() != dst.dtype() || src.shape() != dst.shape()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": src ", DTypeName(src.dtype()), ShapeString(src.shape()), " and dst ",
                     DTypeName(dst.dtype()), ShapeString(dst.shape()), " differ"));
  }
  if (src.device() != src_device || dst.device() != dst_device) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": src is on ", src.device().Name(), " and dst on ", dst.device().Name(),
                     "; expected ", src_device.Name(), " and ", dst_device.Name()));
  }
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Backend::Allocate(DType dtype, const Shape& shape) {
  try {
    return Tensor::Empty(dtype, shape);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("allocating ", DTypeName(dtype), ShapeString(shape), " on ", device().Name()));
  }
}

absl::Status Backend::CopyFromHost(const Tensor& src, Tensor& dst) {
  if (absl::Status s = ValidateCopy("CopyFromHost", src, Device(), dst, device()); !s.ok())
    return s;
  if (src.nbytes() > 0) std::memcpy(dst.raw(), src.raw(), src.nbytes());
  return absl::OkStatus();
}

absl::Status Backend::CopyToHost(const Tensor& src, Tensor& dst) {
  if (absl::Status s = ValidateCopy("CopyToHost", src, device(), dst, Device()); !s.ok()) return s;
  if (src.nbytes() > 0) std::memcpy(dst.raw(), src.raw(), src.nbytes());
  return absl::OkStatus();
}

absl::StatusOr<Tensor> Backend::ToDevice(const Tensor& host) {
  if (!host.device().is_host()) {
    return absl::InvalidArgumentError(
        absl::StrCat("ToDevice: the tensor is on ", host.device().Name(), ", not the host"));
  }
  if (device().is_host()) return host.Share();
  QTRAIN_ASSIGN_OR_RETURN(Tensor t, Allocate(host.dtype(), host.shape()));
  QTRAIN_RETURN_IF_ERROR(CopyFromHost(host, t));
  return t;
}

absl::StatusOr<Tensor> Backend::HostCopy(const Tensor& t) {
  if (t.empty() || t.device().is_host()) return Tensor(t);
  Tensor host = Tensor::Empty(t.dtype(), t.shape());
  QTRAIN_RETURN_IF_ERROR(CopyToHost(t, host));
  return host;
}

absl::StatusOr<Tensor> Backend::ToHost(Tensor t) {
  if (t.empty() || t.device().is_host()) return t;
  return HostCopy(t);
}

int64_t Lda(const MatmulDesc& d) { return d.lda ? d.lda : (d.trans_a ? d.m : d.k); }
int64_t Ldb(const MatmulDesc& d) { return d.ldb ? d.ldb : (d.trans_b ? d.k : d.n); }
int64_t Ldc(const MatmulDesc& d) { return d.ldc ? d.ldc : d.n; }

absl::Status ValidateMatmulDesc(const MatmulDesc& d) {
  if (d.m <= 0 || d.k <= 0 || d.n <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("matmul dims must be positive, got M=", d.m, " K=", d.k, " N=", d.n));
  }
  if (Lda(d) < (d.trans_a ? d.m : d.k) || Ldb(d) < (d.trans_b ? d.k : d.n) || Ldc(d) < d.n) {
    return absl::InvalidArgumentError(absl::StrCat("matmul leading dims too small: lda=", Lda(d),
                                                   " ldb=", Ldb(d), " ldc=", Ldc(d)));
  }
  return absl::OkStatus();
}

absl::Status ValidateInt8MatmulDesc(const Int8MatmulDesc& d) {
  if (d.mm.trans_a) {
    return absl::InvalidArgumentError("int8 matmul takes no transposed src");
  }
  return ValidateMatmulDesc(d.mm);
}

absl::Status ValidateConvDesc(const ConvDesc& d) {
  if (d.n <= 0 || d.h <= 0 || d.w <= 0 || d.c <= 0 || d.o <= 0 || d.kh <= 0 || d.kw <= 0 ||
      d.stride_h <= 0 || d.stride_w <= 0 || d.pad_top < 0 || d.pad_left < 0 || d.pad_bottom < 0 ||
      d.pad_right < 0 || d.groups <= 0 || d.dilation_h <= 0 || d.dilation_w <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "convolution dims must be positive (padding non-negative): src (", d.n, ",", d.h, ",", d.w,
        ",", d.c, ") kernel (", d.kh, ",", d.kw, ",", d.c, ",", d.o, ") stride (", d.stride_h, ",",
        d.stride_w, ") groups ", d.groups, " dilation (", d.dilation_h, ",", d.dilation_w, ")"));
  }
  if (d.c % d.groups != 0 || d.o % d.groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat("convolution groups ", d.groups,
                                                   " must divide the input channels ", d.c,
                                                   " and the output channels ", d.o));
  }
  if (d.h + d.pad_top + d.pad_bottom < d.span_h() || d.w + d.pad_left + d.pad_right < d.span_w()) {
    return absl::InvalidArgumentError(
        absl::StrCat("convolution kernel ", d.kh, "x", d.kw, " (dilated ", d.span_h(), "x",
                     d.span_w(), ") is larger than the padded input ", d.h, "x", d.w));
  }
  return absl::OkStatus();
}

absl::Status ValidatePoolDesc(const PoolDesc& d) {
  if (d.n <= 0 || d.h <= 0 || d.w <= 0 || d.c <= 0 || d.kh <= 0 || d.kw <= 0 || d.stride_h <= 0 ||
      d.stride_w <= 0 || d.pad_top < 0 || d.pad_left < 0 || d.pad_bottom < 0 || d.pad_right < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("pooling dims must be positive (padding non-negative): src (", d.n, ",", d.h,
                     ",", d.w, ",", d.c, ") window (", d.kh, ",", d.kw, ")"));
  }
  if (d.h + d.pad_top + d.pad_bottom < d.kh || d.w + d.pad_left + d.pad_right < d.kw ||
      d.pad_top >= d.kh || d.pad_bottom >= d.kh || d.pad_left >= d.kw || d.pad_right >= d.kw) {
    return absl::InvalidArgumentError(absl::StrCat(
        "pooling window ", d.kh, "x", d.kw, " does not fit the padded input ", d.h, "x", d.w));
  }
  return absl::OkStatus();
}

absl::Status ValidateRotaryDesc(const RotaryDesc& d) {
  if (d.rows <= 0 || d.positions <= 0 || d.dim <= 0 || d.dim % 2 != 0 ||
      d.rows % d.positions != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("rotary embedding needs an even dim and rows a multiple of positions: rows ",
                     d.rows, ", positions ", d.positions, ", dim ", d.dim));
  }
  return absl::OkStatus();
}

absl::Status ValidateCopyDesc(const CopyDesc& d, int64_t* src_end, int64_t* dst_end) {
  int64_t src_reach = d.src_offset, dst_reach = d.dst_offset;
  bool ok = d.block >= 0 && d.src_offset >= 0 && d.dst_offset >= 0;
  bool empty = d.block == 0;
  for (int i = 0; i < 3; ++i) {
    ok = ok && d.count[i] >= 0 && d.src_stride[i] >= 0 && d.dst_stride[i] >= 0;
    empty = empty || d.count[i] == 0;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "copy counts, strides, offsets and block must be non-negative: count (", d.count[0], ",",
        d.count[1], ",", d.count[2], ") src strides (", d.src_stride[0], ",", d.src_stride[1], ",",
        d.src_stride[2], ") dst strides (", d.dst_stride[0], ",", d.dst_stride[1], ",",
        d.dst_stride[2], ") block ", d.block, " offsets ", d.src_offset, ", ", d.dst_offset));
  }
  if (!empty) {
    for (int i = 0; i < 3; ++i) {
      src_reach += (d.count[i] - 1) * d.src_stride[i];
      dst_reach += (d.count[i] - 1) * d.dst_stride[i];
    }
    src_reach += d.block;
    dst_reach += d.block;
  }
  *src_end = empty ? 0 : src_reach;
  *dst_end = empty ? 0 : dst_reach;
  return absl::OkStatus();
}

absl::Status ValidateRowsDesc(const RowsDesc& d) {
  if (d.batch < 0 || d.rows < 0 || d.cols < 0 || !(d.divisor != 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rows op needs non-negative sizes and a non-zero divisor: batch ", d.batch,
                     ", rows ", d.rows, ", cols ", d.cols, ", divisor ", d.divisor));
  }
  return absl::OkStatus();
}

absl::Status ValidateIds(int64_t n, int64_t rows, const int32_t* ids) {
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= rows) {
      return absl::InvalidArgumentError(
          absl::StrCat("id ", ids[i], " at position ", i, " is outside [0, ", rows, ")"));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateAttentionMaskDesc(const AttentionMaskDesc& d) {
  if (d.batch < 0 || d.heads < 0 || d.t < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention mask needs non-negative sizes: batch ", d.batch, ", heads ",
                     d.heads, ", t ", d.t));
  }
  if (d.prefix < 0 || d.prefix > d.t) {
    return absl::InvalidArgumentError(
        absl::StrCat("attention mask: prefix ", d.prefix, " is outside [0, t = ", d.t, "]"));
  }
  return absl::OkStatus();
}

}  // namespace qtrain
