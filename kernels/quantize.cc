#include "kernels/quantize.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/row_ops.h"
#include "kernels/status_macros.h"

namespace qtrain {
namespace {

absl::StatusOr<ScaleLayout> NoiseLayout(const Shape& x_shape, const Tensor& noise) {
  if (noise.dtype() != DType::kF32 || noise.rank() != static_cast<int>(x_shape.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("rounding noise of shape ", ShapeString(noise.shape()),
                     " does not broadcast to ", ShapeString(x_shape)));
  }
  ReduceSpec spec;
  for (int a = 0; a < noise.rank(); ++a) {
    if (noise.dim(a) == 1 && x_shape[a] != 1) {
      spec.axes.push_back(a);
    } else if (noise.dim(a) != x_shape[a]) {
      return absl::InvalidArgumentError(
          absl::StrCat("rounding noise of shape ", ShapeString(noise.shape()),
                       " does not broadcast to ", ShapeString(x_shape)));
    }
  }
  return MakeScaleLayout(x_shape, spec);
}

// Quantizes one run of `n` elements sharing a scale pattern into the storage type of `out`.
void QuantizeRun(const rowops::QuantRowArgs& args, QType qtype, Tensor& out, int64_t offset) {
  switch (out.dtype()) {
    case DType::kS8:
      rowops::QuantizeRowS8(args, out.data<int8_t>() + offset);
      return;
    case DType::kU8:
      rowops::QuantizeRowU8(args, out.data<uint8_t>() + offset);
      return;
    case DType::kS16: {
      std::vector<float> values(args.n);
      rowops::QuantizeRowF32(args, values.data());
      int16_t* o = out.data<int16_t>() + offset;
      for (int64_t i = 0; i < args.n; ++i) o[i] = static_cast<int16_t>(values[i]);
      return;
    }
    case DType::kF32: {  // fp8 grid values
      float* o = out.data<float>() + offset;
      for (int64_t i = 0; i < args.n; ++i) {
        o[i] = ConvertValue(args.x[i] / args.scale[i * args.scale_stride], qtype);
      }
      return;
    }
    case DType::kS32:
      break;
  }
  QTRAIN_CHECK(false);
}

}  // namespace

DType StorageDType(QType qtype) {
  if (qtype == QType::kUint8) return DType::kU8;
  if (qtype == QType::kInt16) return DType::kS16;
  if (GetQTypeInfo(qtype).is_float8) return DType::kF32;
  return DType::kS8;
}

absl::StatusOr<QuantizedTensor> Quantize(const Tensor& x, const ScaleLayout& l,
                                         const QuantParams& params, QType qtype,
                                         RoundingNoise noise) {
  if (x.dtype() != DType::kF32) {
    return absl::InvalidArgumentError(
        absl::StrCat("quantize expects f32 input, got ", DTypeName(x.dtype())));
  }
  const QTypeInfo& info = GetQTypeInfo(qtype);
  const bool per_tensor = params.scale.numel() == 1;
  if (params.scale.numel() != l.num_scales && !per_tensor) {
    return absl::InvalidArgumentError(absl::StrCat("scale of shape ",
                                                   ShapeString(params.scale.shape()),
                                                   " does not match ", ShapeString(l.scale_shape)));
  }
  ScaleLayout nl;
  if (noise.values != nullptr) {
    if (info.is_float8) {
      return absl::InvalidArgumentError(
          absl::StrCat("stochastic rounding is not supported for ", info.name));
    }
    QTRAIN_ASSIGN_OR_RETURN(nl, NoiseLayout(x.shape(), *noise.values));
  }

  QuantizedTensor out;
  out.qtype = qtype;
  out.q = Tensor::Empty(StorageDType(qtype), x.shape());
  out.params = params;
  out.layout = l;
  if (per_tensor && l.num_scales != 1) {  // fixed calibration: one scale for everything
    ReduceSpec all;
    all.per_tensor = true;
    QTRAIN_ASSIGN_OR_RETURN(out.layout, MakeScaleLayout(x.shape(), all));
  }
  const ScaleLayout& sl = out.layout;

  const float* px = x.data<float>();
  const float* ps = params.scale.data<float>();
  const float* pz = params.symmetric() ? nullptr : params.zero_point.data<float>();
  const float* pn = noise.values ? noise.values->data<float>() : nullptr;
  const InnerMode mode = GetInnerMode(sl);
  const InnerMode noise_mode = pn ? GetInnerMode(nl) : InnerMode::kOneScale;
  const int64_t n = sl.dims[3];

  std::vector<int64_t> noise_bases;
  if (pn) {
    ForEachRow(nl, [&](int64_t, int64_t base) { noise_bases.push_back(base); });
  }
  ParallelForEachRow(sl, [&](int64_t row, int64_t offset, int64_t base) {
    rowops::QuantRowArgs a{px + offset, n, ps + base, 0,        pz ? pz + base : nullptr,
                           nullptr,     0, info.qmin, info.qmax};
    if (pn) {
      a.noise = pn + noise_bases[row];
      a.noise_stride = noise_mode == InnerMode::kPerElement ? 1 : 0;
    }
    if (mode == InnerMode::kTiled) {
      const int64_t t = sl.divisor[3];
      for (int64_t j = 0; j < n / t; ++j) {
        rowops::QuantRowArgs ta = a;
        ta.x += j * t;
        ta.n = t;
        ta.scale += j;
        if (ta.zero_point) ta.zero_point += j;
        if (ta.noise) ta.noise += j * t * a.noise_stride;
        QuantizeRun(ta, qtype, out.q, offset + j * t);
      }
    } else {
      a.scale_stride = mode == InnerMode::kPerElement ? 1 : 0;
      QuantizeRun(a, qtype, out.q, offset);
    }
  });
  return out;
}

absl::StatusOr<QuantizedTensor> CalibrateAndQuantize(const Tensor& x, const ScaleLayout& l,
                                                     QType qtype, const CalibrationMethod& method,
                                                     Calibration* calibration) {
  const DType storage = StorageDType(qtype);
  const bool fused = x.dtype() == DType::kF32 && method.kind == CalibrationKind::kAbsMax &&
                     GetInnerMode(l) == InnerMode::kOneScale && RowsHaveDistinctScales(l) &&
                     (storage == DType::kS8 || storage == DType::kU8);
  if (!fused) {
    Calibration c = Calibrate(x, l, method, qtype);
    QTRAIN_ASSIGN_OR_RETURN(QuantParams params, ComputeQuantParams(c, qtype));
    if (calibration != nullptr) *calibration = std::move(c);
    return Quantize(x, l, params, qtype);
  }
  const QTypeInfo& info = GetQTypeInfo(qtype);
  const float min_scale = MinScale();
  QuantizedTensor out;
  out.qtype = qtype;
  out.q = Tensor::Empty(storage, x.shape());
  out.layout = l;
  out.params.scale = Tensor::Empty(DType::kF32, l.scale_shape);
  Tensor absmax = Tensor::Empty(DType::kF32, l.scale_shape);
  const float* px = x.data<float>();
  float* ps = out.params.scale.data<float>();
  float* pa = absmax.data<float>();
  const int64_t n = l.dims[3];
  ParallelForEachRow(l, [&](int64_t, int64_t offset, int64_t base) {
    // Same operations as Calibrate + ComputeQuantParams, row by row.
    pa[base] = rowops::AbsMax(px + offset, n) * method.k;
    const float s = pa[base] / info.bound;
    ps[base] = s < min_scale ? 1.0f : s;
    const rowops::QuantRowArgs a{px + offset, n, ps + base, 0,        nullptr,
                                 nullptr,     0, info.qmin, info.qmax};
    QuantizeRun(a, qtype, out.q, offset);
  });
  if (calibration != nullptr) {
    calibration->symmetric = true;
    calibration->absmax = std::move(absmax);
  }
  return out;
}

absl::StatusOr<QuantizedTensor> QuantizeDynamic(const Tensor& x, const ReduceSpec& spec,
                                                QType qtype, const CalibrationMethod& method) {
  QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(x.shape(), spec));
  return CalibrateAndQuantize(x, layout, qtype, method);
}

Tensor QValuesAsFloat(const QuantizedTensor& qt) {
  Tensor out = Tensor::Empty(DType::kF32, qt.q.shape());
  float* o = out.data<float>();
  const int64_t n = out.numel();
  switch (qt.q.dtype()) {
    case DType::kS8:
      for (int64_t i = 0; i < n; ++i) o[i] = qt.q.data<int8_t>()[i];
      break;
    case DType::kU8:
      for (int64_t i = 0; i < n; ++i) o[i] = qt.q.data<uint8_t>()[i];
      break;
    case DType::kS16:
      for (int64_t i = 0; i < n; ++i) o[i] = qt.q.data<int16_t>()[i];
      break;
    case DType::kF32:
      out = qt.q;
      break;
    case DType::kS32:
      QTRAIN_CHECK(false);
  }
  return out;
}

Tensor Dequantize(const QuantizedTensor& qt) {
  const ScaleLayout& l = qt.layout;
  Tensor out = Tensor::Empty(DType::kF32, qt.q.shape());
  const float* ps = qt.params.scale.data<float>();
  const float* pz = qt.params.symmetric() ? nullptr : qt.params.zero_point.data<float>();
  const InnerMode mode = GetInnerMode(l);
  const int64_t n = l.dims[3];
  float* po = out.data<float>();
  if (qt.q.dtype() == DType::kS8 && mode != InnerMode::kTiled) {
    const int64_t stride = mode == InnerMode::kPerElement ? 1 : 0;
    ParallelForEachRow(l, [&](int64_t, int64_t offset, int64_t base) {
      rowops::DequantizeRowS8(qt.q.data<int8_t>() + offset, n, ps + base, stride,
                              pz ? pz + base : nullptr, po + offset);
    });
    return out;
  }
  const Tensor values = QValuesAsFloat(qt);
  const float* pv = values.data<float>();
  ForEachRow(l, [&](int64_t offset, int64_t base) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t s = base + (mode == InnerMode::kPerElement ? i
                                : mode == InnerMode::kTiled    ? i / l.divisor[3]
                                                               : 0);
      po[offset + i] = (pv[offset + i] - (pz ? pz[s] : 0.0f)) * ps[s];
    }
  });
  return out;
}

}  // namespace qtrain
