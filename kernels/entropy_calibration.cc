#include "kernels/entropy_calibration.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace qtrain {
namespace {

constexpr double kEpsilon = 1e-4;

// Normalises `d` to sum 1 and smooths it (§9: zeros become ε, non-zeros give up ε·z/nz). False
// when `d` cannot be a distribution: nothing non-zero, or an entry <= 0 after smoothing.
bool NormaliseAndSmooth(std::vector<double>& d) {
  double sum = 0.0;
  for (double v : d) sum += v;
  int64_t zeros = 0;
  for (double v : d) zeros += v == 0.0;
  const int64_t nonzeros = static_cast<int64_t>(d.size()) - zeros;
  if (nonzeros == 0 || sum <= 0.0) return false;
  const double take = kEpsilon * static_cast<double>(zeros) / static_cast<double>(nonzeros);
  for (double& v : d) {
    v = v == 0.0 ? kEpsilon : v / sum - take;
    if (v <= 0.0) return false;
  }
  return true;
}

}  // namespace

void EntropyAdd(EntropyHistogram& h, const Tensor& x) {
  const float* p = x.data<float>();
  const int64_t n = x.numel();
  // Non-finite values (a diverging step) are left out: they have no place on a finite range.
  float m = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    if (std::isfinite(p[i])) m = std::max(m, std::fabs(p[i]));
  }
  if (h.range == 0.0f) {
    if (m == 0.0f) return;  // nothing to place yet: R stays 0
    h.range = m;
    h.hist.assign(h.bins, 0.0);
  } else if (m > h.range) {
    int shift = 0;  // j, the smallest j >= 1 with R·2^j >= m (exact doublings in f32)
    float r = h.range;
    while (r < m && std::isfinite(r * 2.0f)) {
      r *= 2.0f;
      ++shift;
    }
    h.range = r;
    std::vector<double> merged(h.bins, 0.0);
    for (int64_t b = 0; b < h.bins; ++b) merged[shift < 63 ? b >> shift : 0] += h.hist[b];
    h.hist = std::move(merged);
  }
  const double scale = static_cast<double>(h.bins) / static_cast<double>(h.range);
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(p[i])) continue;
    const double at = static_cast<double>(std::fabs(p[i])) * scale;
    const int64_t b = std::min<int64_t>(h.bins - 1, static_cast<int64_t>(std::floor(at)));
    h.hist[b] += 1.0;
  }
}

float EntropyThreshold(const EntropyHistogram& h, QType qtype) {
  if (h.hist.empty()) return h.range;
  const QTypeInfo& info = GetQTypeInfo(qtype);
  const int64_t levels = info.is_float8 ? 128 : static_cast<int64_t>(info.qmax) + 1;
  const int64_t bins = static_cast<int64_t>(h.hist.size());
  // §9 step 3: the search reads a copy whose bin 0 holds bin 1's count. After a ReLU a third or
  // more of the values are exact zeros; that spike would pull the threshold far below the bulk.
  std::vector<double> hist = h.hist;
  if (bins >= 2) hist[0] = hist[1];
  double best_kl = std::numeric_limits<double>::infinity();
  int64_t best = -1;
  std::vector<double> p, q;
  for (int64_t i = levels; i <= bins; ++i) {
    p.assign(hist.begin(), hist.begin() + i);
    for (int64_t b = i; b < bins; ++b) p[i - 1] += hist[b];
    q.assign(i, 0.0);
    for (int64_t c = 0; c < levels; ++c) {
      const int64_t lo = c * i / levels, hi = (c + 1) * i / levels;
      double total = 0.0;
      int64_t nonzero = 0;
      for (int64_t b = lo; b < hi; ++b) {
        total += hist[b];
        nonzero += hist[b] != 0.0;
      }
      if (nonzero == 0) continue;
      const double each = total / static_cast<double>(nonzero);
      for (int64_t b = lo; b < hi; ++b) q[b] = hist[b] != 0.0 ? each : 0.0;
    }
    if (!NormaliseAndSmooth(p) || !NormaliseAndSmooth(q)) continue;
    double kl = 0.0;
    for (int64_t b = 0; b < i; ++b) kl += p[b] * std::log(p[b] / q[b]);
    if (kl < best_kl) {
      best_kl = kl;
      best = i;
    }
  }
  if (best < 0) return h.range;
  return static_cast<float>(static_cast<double>(best) * static_cast<double>(h.range) /
                            static_cast<double>(bins));
}

}  // namespace qtrain
