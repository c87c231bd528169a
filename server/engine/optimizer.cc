#include "server/engine/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/row_ops.h"
#include "kernels/status_macros.h"

#include "absl/strings/str_cat.h"

namespace qtrain::engine {
namespace {

constexpr double kPi = 3.14159265358979323846;

absl::Status Bad(absl::string_view field, double value, absl::string_view rule) {
  return absl::InvalidArgumentError(absl::StrCat("optimizer.", field, " = ", value, ": ", rule));
}

bool In01(float v) { return std::isfinite(v) && v >= 0.0f && v < 1.0f; }

}  // namespace

float LearningRate(const proto::LrSchedule& s, int64_t step) {
  const float peak = s.learning_rate();
  if (s.kind() == proto::LrSchedule::CONSTANT) {
    return peak;
  }
  if (step < s.warmup_steps()) {
    return peak * static_cast<float>(step + 1) / static_cast<float>(s.warmup_steps());
  }
  if (s.decay_steps() <= 0) {
    return peak;
  }
  const double progress =
      std::min(1.0, static_cast<double>(step - s.warmup_steps()) / s.decay_steps());
  const double end = s.end_learning_rate();
  if (s.kind() == proto::LrSchedule::WARMUP_COSINE) {
    return static_cast<float>(end + (peak - end) * 0.5 * (1.0 + std::cos(kPi * progress)));
  }
  return static_cast<float>(peak + (end - peak) * progress);
}

absl::StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(const proto::OptimizerConfig& in) {
  proto::OptimizerConfig c = in;
  if (c.kind_case() == proto::OptimizerConfig::KIND_NOT_SET) {
    c.mutable_adamw();
  }
  if (c.schedule().learning_rate() == 0.0f) {
    c.mutable_schedule()->set_learning_rate(1e-3f);
  }
  const auto& s = c.schedule();
  if (!proto::LrSchedule::Kind_IsValid(s.kind())) {
    return Bad("schedule.kind", s.kind(),
               "is unknown (CONSTANT = 0, WARMUP_COSINE = 1, WARMUP_LINEAR = 2)");
  }
  if (!(std::isfinite(s.learning_rate()) && s.learning_rate() > 0)) {
    return Bad("schedule.learning_rate", s.learning_rate(), "must be a positive number");
  }
  if (!(std::isfinite(s.end_learning_rate()) && s.end_learning_rate() >= 0)) {
    return Bad("schedule.end_learning_rate", s.end_learning_rate(), "must be >= 0");
  }
  if (s.warmup_steps() < 0) {
    return Bad("schedule.warmup_steps", s.warmup_steps(), "must be >= 0");
  }
  if (s.decay_steps() < 0) {
    return Bad("schedule.decay_steps", s.decay_steps(), "must be >= 0");
  }
  if (!(std::isfinite(c.weight_decay()) && c.weight_decay() >= 0)) {
    return Bad("weight_decay", c.weight_decay(), "must be >= 0");
  }
  if (!(std::isfinite(c.clip_global_norm()) && c.clip_global_norm() >= 0)) {
    return Bad("clip_global_norm", c.clip_global_norm(), "must be >= 0 (0: off)");
  }
  if (c.has_sgd()) {
    if (!In01(c.sgd().momentum())) {
      return Bad("sgd.momentum", c.sgd().momentum(), "in [0, 1)");
    }
  } else {
    auto* a = c.mutable_adamw();
    if (a->beta1() == 0.0f) {
      a->set_beta1(0.9f);
    }
    if (a->beta2() == 0.0f) {
      a->set_beta2(0.999f);
    }
    if (a->epsilon() == 0.0f) {
      a->set_epsilon(1e-8f);
    }
    if (!In01(a->beta1())) {
      return Bad("adamw.beta1", a->beta1(), "must be in [0, 1)");
    }
    if (!In01(a->beta2())) {
      return Bad("adamw.beta2", a->beta2(), "must be in [0, 1)");
    }
    if (!(std::isfinite(a->epsilon()) && a->epsilon() > 0)) {
      return Bad("adamw.epsilon", a->epsilon(), "must be > 0");
    }
  }
  return std::unique_ptr<Optimizer>(new Optimizer(std::move(c)));
}

absl::StatusOr<Tensor*> Optimizer::Slot(Backend& backend, const Param& p, const char* slot) {
  const std::string key = absl::StrCat(p.name, "/", slot);
  auto it = slots_.find(key);
  if (it == slots_.end()) {
    QTRAIN_ASSIGN_OR_RETURN(Tensor zeros, backend.Zeros(p.value.shape()));
    it = slots_.emplace(key, std::move(zeros)).first;
  }
  return &it->second;
}

absl::StatusOr<std::map<std::string, Tensor*>> Optimizer::State(Backend& backend,
                                                                const std::vector<Param*>& params) {
  maxima_.clear();  // the caller may write the slots (or the weights with them)
  std::map<std::string, Tensor*> out;
  for (const Param* p : params) {
    if (config_.has_sgd()) {
      if (config_.sgd().momentum() > 0) {
        QTRAIN_ASSIGN_OR_RETURN(out[p->name + "/momentum"], Slot(backend, *p, "momentum"));
      }
    } else {
      QTRAIN_ASSIGN_OR_RETURN(out[p->name + "/m"], Slot(backend, *p, "m"));
      QTRAIN_ASSIGN_OR_RETURN(out[p->name + "/v"], Slot(backend, *p, "v"));
    }
  }
  return out;
}

absl::StatusOr<float> GlobalGradNorm(Backend& backend, const std::vector<Param*>& params) {
  std::vector<const Tensor*> grads;
  grads.reserve(params.size());
  for (const Param* p : params) grads.push_back(&p->grad);
  QTRAIN_ASSIGN_OR_RETURN(double sq, backend.SumOfSquares(grads));
  return static_cast<float>(std::sqrt(sq));
}

bool Optimizer::ProvablyFinite(const Param& p, float clip, float grad_norm, float lr) const {
  auto it = maxima_.find(p.name);
  if (it == maxima_.end()) return false;
  // Upper bounds of the new |w|, |m| and v in double: every gradient element is at most the
  // global norm; AdamW's step is at most m / (c1 * eps) whatever v is.
  constexpr double kSafe = 1e37;  // below FLT_MAX (3.4e38) with room for float rounding
  const double mw = it->second.w, mm = it->second.m, mv = it->second.v;
  const double g = static_cast<double>(clip) * grad_norm, wd = config_.weight_decay();
  double w_bound = 0, m_bound = 0, v_bound = 0;
  if (config_.has_sgd()) {
    const double mu = config_.sgd().momentum();
    const double grad = g + wd * mw;
    m_bound = mu * mm + grad;
    w_bound = mw + lr * (config_.sgd().nesterov() ? grad + mu * m_bound : m_bound);
  } else {
    const auto& a = config_.adamw();
    m_bound = a.beta1() * mm + (1.0 - a.beta1()) * g;
    v_bound = a.beta2() * mv + (1.0 - a.beta2()) * g * g;
    const double c1 = 1.0 - a.beta1();  // c1 = 1 - beta1^t is smallest at t = 1
    w_bound = mw + lr * (m_bound / (c1 * a.epsilon()) + wd * mw);
  }
  return w_bound < kSafe && m_bound < kSafe && v_bound < kSafe;
}

absl::StatusOr<Optimizer::StepInfo> Optimizer::Apply(Backend& backend,
                                                     const std::vector<Param*>& params,
                                                     int64_t step, float grad_norm) {
  StepInfo info;
  info.grad_norm = grad_norm;
  float clip = 1.0f;
  if (config_.clip_global_norm() > 0 && info.grad_norm > config_.clip_global_norm()) {
    clip = config_.clip_global_norm() / info.grad_norm;
  }
  const float lr = LearningRate(config_.schedule(), step);
  info.learning_rate = lr;
  const float wd = config_.weight_decay();
  const auto& a = config_.adamw();
  const double t = static_cast<double>(step + 1);
  AdamWHyper adamw{clip,
                   lr,
                   wd,
                   a.beta1(),
                   a.beta2(),
                   a.epsilon(),
                   static_cast<float>(1.0 - std::pow(a.beta1(), t)),
                   static_cast<float>(1.0 - std::pow(a.beta2(), t))};
  const float mu = config_.sgd().momentum();
  SgdHyper sgd{clip, lr, wd, mu, config_.sgd().nesterov()};
  auto update = [&](Param* p, bool dry_run) -> absl::StatusOr<UpdateResult> {
    if (config_.has_sgd()) {
      Tensor* momentum = nullptr;
      if (mu != 0.0f) {
        QTRAIN_ASSIGN_OR_RETURN(momentum, Slot(backend, *p, "momentum"));
      }
      return backend.Sgd(sgd, p->value, momentum, p->grad, dry_run);
    }
    QTRAIN_ASSIGN_OR_RETURN(Tensor * m, Slot(backend, *p, "m"));
    QTRAIN_ASSIGN_OR_RETURN(Tensor * v, Slot(backend, *p, "v"));
    return backend.AdamW(adamw, p->value, *m, *v, p->grad, dry_run);
  };
  // First, without writing anything: do the sizes agree, would every new value be finite?
  for (Param* p : params) {
    if (p->grad.numel() != p->value.numel()) {
      return absl::InternalError(absl::StrCat("step ", step, ": ", p->name, " has ",
                                              p->value.numel(), " values but ", p->grad.numel(),
                                              " gradients; nothing was changed"));
    }
  }
  for (Param* p : params) {
    if (ProvablyFinite(*p, clip, grad_norm, lr)) continue;
    QTRAIN_ASSIGN_OR_RETURN(UpdateResult dry, update(p, /*dry_run=*/true));
    if (!dry.finite) {
      return absl::FailedPreconditionError(absl::StrCat(
          "step ", step, ": the update at learning rate ", lr, " would make ", p->name,
          " (or its optimizer state) infinite or NaN; nothing was changed — lower the learning "
          "rate or enable clip_global_norm"));
    }
  }
  for (Param* p : params) {
    QTRAIN_ASSIGN_OR_RETURN(UpdateResult done, update(p, /*dry_run=*/false));
    maxima_[p->name] = done.maxima;
  }
  return info;
}

}  // namespace qtrain::engine
