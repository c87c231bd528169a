#include "tools/conformance/golden_runner.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "kernels/qdot.h"
#include "kernels/quantize.h"
#include "kernels/srq.h"
#include "kernels/status_macros.h"

namespace qtrain::conformance {
namespace {

using json = nlohmann::json;

// Tolerances of numerics.md §8.
struct Tolerance {
  double rtol = 0;
  double atol = 0;
};
constexpr Tolerance kExact{0, 0};
constexpr Tolerance kRms{1e-6, 0};
constexpr Tolerance kIntegerDot{1e-5, 0};
constexpr Tolerance kFloatGrad{1e-4, 1e-6};

absl::StatusOr<Tensor> ToTensor(const json& j, const std::string& field) {
  if (!j.is_object() || !j.contains("shape") || !j.contains("data")) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\" is not a tensor"));
  }
  Shape shape = j.at("shape").get<Shape>();
  std::vector<float> data;
  for (const json& v : j.at("data")) {
    data.push_back(v.is_null() ? NAN : v.get<float>());
  }
  if (static_cast<int64_t>(data.size()) != NumElements(shape)) {
    return absl::InvalidArgumentError(absl::StrCat("field \"", field, "\": ", data.size(),
                                                   " values for shape ", ShapeString(shape)));
  }
  return Tensor::FromFloats(shape, data);
}

absl::StatusOr<Tensor> Field(const json& c, const std::string& field) {
  if (!c.contains(field)) {
    return absl::InvalidArgumentError(absl::StrCat("missing field \"", field, "\""));
  }
  return ToTensor(c.at(field), field);
}

// Accumulates comparisons of one case; the first mismatch becomes the case's message.
class Comparer {
 public:
  explicit Comparer(CaseResult& r) : r_(r) {}

  void Compare(const std::string& what, const Tensor& got, const json& expect_tensor,
               Tolerance tol) {
    absl::StatusOr<Tensor> want = ToTensor(expect_tensor, what);
    if (!want.ok()) {
      return Fail(std::string(want.status().message()));
    }
    if (got.shape() != want->shape()) {
      return Fail(absl::StrCat(what, ": shape ", ShapeString(got.shape()), ", expected ",
                               ShapeString(want->shape())));
    }
    const float* a = got.data<float>();
    const float* b = want->data<float>();
    for (int64_t i = 0; i < got.numel(); ++i) {
      const double diff = std::fabs(static_cast<double>(a[i]) - b[i]);
      const double rel = diff / std::max(std::fabs(static_cast<double>(b[i])), 1e-30);
      const bool same_bits = a[i] == b[i] || (std::isnan(a[i]) && std::isnan(b[i]));
      if (!same_bits) {
        r_.max_abs_err = std::max(r_.max_abs_err, diff);
        r_.max_rel_err = std::max(r_.max_rel_err, rel);
      }
      if (!same_bits && diff > tol.atol + tol.rtol * std::fabs(static_cast<double>(b[i]))) {
        Fail(absl::StrCat(what, "[", i, "] = ", a[i], ", expected ", b[i]));
      }
    }
  }

  void Fail(const std::string& message) {
    if (r_.passed) {
      r_.message = message;
    }
    r_.passed = false;
  }

 private:
  CaseResult& r_;
};

absl::Status RunConvert(const json& c, Comparer& cmp) {
  QTRAIN_ASSIGN_OR_RETURN(QType qtype, ParseQType(c.at("qtype").get<std::string>()));
  QTRAIN_ASSIGN_OR_RETURN(Tensor x, Field(c, "x"));
  Tensor q = x;
  for (float& v : q.span<float>()) {
    v = ConvertValue(v, qtype);
  }
  cmp.Compare("q", q, c.at("expect").at("q"), kExact);
  return absl::OkStatus();
}

absl::Status RunQuantize(const json& c, Comparer& cmp) {
  QTRAIN_ASSIGN_OR_RETURN(QType qtype, ParseQType(c.at("qtype").get<std::string>()));
  QTRAIN_ASSIGN_OR_RETURN(CalibrationMethod method,
                          ParseCalibrationMethod(c.at("method").get<std::string>()));
  QTRAIN_ASSIGN_OR_RETURN(Tensor x, Field(c, "x"));
  ReduceSpec spec;
  spec.axes = c.at("reduce_axes").get<std::vector<int>>();
  QTRAIN_ASSIGN_OR_RETURN(QuantizedTensor qt, QuantizeDynamic(x, spec, qtype, method));
  const json& e = c.at("expect");
  const Tolerance tol = method.kind == CalibrationKind::kRms ? kRms : kExact;
  cmp.Compare("scale", qt.params.scale, e.at("scale"), tol);
  if (e.contains("zero_point")) {
    if (qt.params.symmetric()) {
      cmp.Fail("zero_point expected, but the quantization is symmetric");
    } else {
      cmp.Compare("zero_point", qt.params.zero_point, e.at("zero_point"), kExact);
    }
  }
  cmp.Compare("q", QValuesAsFloat(qt), e.at("q"), kExact);
  cmp.Compare("deq", Dequantize(qt), e.at("deq"), tol);
  return absl::OkStatus();
}

absl::Status RunQDot(const json& c, Backend& backend, Comparer& cmp) {
  QDotConfig config;
  QTRAIN_ASSIGN_OR_RETURN(QType xq, ParseQType(c.at("x_qtype").get<std::string>()));
  QTRAIN_ASSIGN_OR_RETURN(QType wq, ParseQType(c.at("w_qtype").get<std::string>()));
  config.lhs.qtype = xq;
  config.rhs.qtype = wq;
  QTRAIN_ASSIGN_OR_RETURN(config.lhs.method,
                          ParseCalibrationMethod(c.at("x_method").get<std::string>()));
  QTRAIN_ASSIGN_OR_RETURN(config.rhs.method,
                          ParseCalibrationMethod(c.at("w_method").get<std::string>()));
  if (c.contains("tile_size") && !c.at("tile_size").is_null()) {
    config.tile_size = c.at("tile_size").get<int64_t>();
  }
  QTRAIN_ASSIGN_OR_RETURN(Tensor x, Field(c, "x"));
  QTRAIN_ASSIGN_OR_RETURN(Tensor w, Field(c, "w"));
  QTRAIN_ASSIGN_OR_RETURN(Tensor g, Field(c, "g"));
  const json& e = c.at("expect");

  QTRAIN_ASSIGN_OR_RETURN(QDotForwardResult fwd, QDotForward(backend, x, w, config));
  cmp.Compare("y", fwd.y, e.at("y"), kIntegerDot);
  QTRAIN_ASSIGN_OR_RETURN(QDotGradients qat, QDotBackward(backend, x, w, g, fwd.residuals, config));
  cmp.Compare("qat_dx", qat.dx, e.at("qat_dx"), kFloatGrad);
  cmp.Compare("qat_dw", qat.dw, e.at("qat_dw"), kFloatGrad);
  if (e.contains("qt_int8_dx")) {
    config.bwd_qtype = QType::kInt8;
    QTRAIN_ASSIGN_OR_RETURN(QDotGradients qt,
                            QDotBackward(backend, x, w, g, fwd.residuals, config));
    cmp.Compare("qt_int8_dx", qt.dx, e.at("qt_int8_dx"), kIntegerDot);
    cmp.Compare("qt_int8_dw", qt.dw, e.at("qt_int8_dw"), kIntegerDot);
  }
  return absl::OkStatus();
}

// An entropy srq case (§9): the threshold used at each step, then count, R and the histogram.
absl::Status RunEntropySrq(const json& c, const CalibrationMethod& method, QType qtype,
                           Comparer& cmp) {
  const json& e = c.at("expect");
  std::optional<SrqStat> stat;
  int step = 0;
  for (const json& batch : c.at("batches")) {
    QTRAIN_ASSIGN_OR_RETURN(Tensor x, ToTensor(batch, "batches"));
    if (!stat) stat = MakeEntropySrqStat(x.rank(), method.bins);
    const Calibration used = SrqObserveEntropy(*stat, x, qtype, /*update=*/true);
    cmp.Compare(absl::StrCat("used_per_step[", step, "].absmax"), used.absmax,
                e.at("used_per_step").at(step).at("absmax"), kExact);
    ++step;
  }
  if (!stat) return absl::InvalidArgumentError("srq case has no batches");
  if (stat->count != e.at("count").get<int64_t>()) {
    cmp.Fail(absl::StrCat("count = ", stat->count, ", expected ", e.at("count").get<int64_t>()));
  }
  if (stat->entropy->range != e.at("R").get<float>()) {
    cmp.Fail(absl::StrCat("R = ", stat->entropy->range, ", expected ", e.at("R").get<float>()));
  }
  const std::vector<double> hist = e.at("hist").get<std::vector<double>>();
  if (stat->entropy->hist != hist) {
    cmp.Fail(absl::StrCat("hist differs (", stat->entropy->hist.size(), " bins, expected ",
                          hist.size(), ")"));
  }
  return absl::OkStatus();
}

absl::Status RunSrq(const json& c, Comparer& cmp) {
  QTRAIN_ASSIGN_OR_RETURN(CalibrationMethod method,
                          ParseCalibrationMethod(c.at("method").get<std::string>()));
  ReduceSpec spec;
  spec.axes = c.at("reduce_axes").get<std::vector<int>>();
  const std::vector<int> batch_axes = c.at("act_batch_axes").get<std::vector<int>>();
  // Only mse depends on the qtype (§9); the core contract's cases carry none.
  QType qtype = QType::kInt8;
  if (c.contains("qtype")) {
    QTRAIN_ASSIGN_OR_RETURN(qtype, ParseQType(c.at("qtype").get<std::string>()));
  }
  const json& e = c.at("expect");
  const Tolerance tol = method.kind == CalibrationKind::kRms ? kRms : kExact;
  if (method.kind == CalibrationKind::kEntropy) return RunEntropySrq(c, method, qtype, cmp);
  std::optional<SrqStat> stat;
  int step = 0;
  for (const json& batch : c.at("batches")) {
    QTRAIN_ASSIGN_OR_RETURN(Tensor x, ToTensor(batch, "batches"));
    QTRAIN_ASSIGN_OR_RETURN(ScaleLayout layout, MakeScaleLayout(x.shape(), spec));
    const Calibration dynamic = Calibrate(x, layout, method, qtype);
    if (!stat) {
      Shape stat_shape = layout.scale_shape;
      for (int a : batch_axes) {
        stat_shape[a < 0 ? a + x.rank() : a] = 1;
      }
      stat = MakeSrqStat(stat_shape, dynamic.symmetric);
    }
    QTRAIN_ASSIGN_OR_RETURN(Calibration used, SrqObserve(*stat, dynamic, batch_axes, true));
    const json& want = e.at("used_per_step").at(step);
    const std::string prefix = absl::StrCat("used_per_step[", step, "].");
    if (used.symmetric) {
      cmp.Compare(prefix + "absmax", used.absmax, want.at("absmax"), tol);
    } else {
      cmp.Compare(prefix + "min", used.lo, want.at("min"), tol);
      cmp.Compare(prefix + "max", used.hi, want.at("max"), tol);
    }
    ++step;
  }
  if (!stat) {
    return absl::InvalidArgumentError("srq case has no batches");
  }
  if (stat->count != e.at("count").get<int64_t>()) {
    cmp.Fail(absl::StrCat("count = ", stat->count, ", expected ", e.at("count").get<int64_t>()));
  }
  const json& sums = e.at("sums");
  if (stat->symmetric) {
    cmp.Compare("sums.absmax", stat->sum_of_absmax, sums.at("absmax"), tol);
  } else {
    cmp.Compare("sums.min", stat->sum_of_min, sums.at("min"), tol);
    cmp.Compare("sums.max", stat->sum_of_max, sums.at("max"), tol);
  }
  return absl::OkStatus();
}

CaseResult RunCase(const json& c, Backend& backend) {
  CaseResult r;
  r.name = c.value("name", "<unnamed>");
  r.op = c.value("op", "");
  r.passed = true;
  Comparer cmp(r);
  absl::Status status;
  try {
    if (r.op == "convert") {
      status = RunConvert(c, cmp);
    } else if (r.op == "quantize") {
      status = RunQuantize(c, cmp);
    } else if (r.op == "qdot") {
      status = RunQDot(c, backend, cmp);
    } else if (r.op == "srq") {
      status = RunSrq(c, cmp);
    } else {
      status = absl::InvalidArgumentError(absl::StrCat("unknown op \"", r.op, "\""));
    }
  } catch (const json::exception& e) {
    status = absl::InvalidArgumentError(absl::StrCat("malformed case: ", e.what()));
  }
  if (!status.ok()) {
    cmp.Fail(status.ToString());
  }
  return r;
}

}  // namespace

absl::StatusOr<std::vector<CaseResult>> RunGoldenText(const std::string& text, Backend& backend) {
  json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) {
    return absl::InvalidArgumentError("golden file is not valid JSON");
  }
  if (!doc.is_object() || doc.value("format", "") != "qtrain-golden-v1") {
    return absl::InvalidArgumentError(
        "golden file: expected an object with \"format\": \"qtrain-golden-v1\"");
  }
  if (!doc.contains("cases") || !doc.at("cases").is_array()) {
    return absl::InvalidArgumentError("golden file: \"cases\" must be an array");
  }
  std::vector<CaseResult> results;
  for (const json& c : doc.at("cases")) {
    results.push_back(RunCase(c, backend));
  }
  return results;
}

absl::StatusOr<std::vector<CaseResult>> RunGoldenFile(const std::string& path, Backend& backend) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat("cannot open golden file \"", path, "\""));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return RunGoldenText(buffer.str(), backend);
}

}  // namespace qtrain::conformance
