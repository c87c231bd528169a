#include "server/engine/init.h"

#include <cmath>
#include <random>

namespace qtrain::engine {

uint64_t StreamSeed(uint64_t seed, const std::string& name) {
  uint64_t h = 1469598103934665603ull ^ seed;  // FNV-1a over the name, keyed by the seed
  for (unsigned char c : name) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

Tensor NormalInit(const Shape& shape, float stddev, uint64_t seed, const std::string& name) {
  std::mt19937_64 gen(StreamSeed(seed, name));
  std::normal_distribution<double> dist(0.0, 1.0);
  return Tensor::Generate(shape, [&](int64_t) { return static_cast<float>(dist(gen) * stddev); });
}

Tensor LecunNormal(const Shape& shape, int64_t fan_in, uint64_t seed, const std::string& name) {
  // Truncated at ±2: divide by the truncated distribution's stddev to keep variance 1/fan_in.
  constexpr double kTruncatedStd = 0.87962566103423978;
  const double stddev = std::sqrt(1.0 / static_cast<double>(fan_in)) / kTruncatedStd;
  std::mt19937_64 gen(StreamSeed(seed, name));
  std::normal_distribution<double> dist(0.0, 1.0);
  return Tensor::Generate(shape, [&](int64_t) {
    double z = dist(gen);
    while (std::fabs(z) > 2.0) {
      z = dist(gen);
    }
    return static_cast<float>(z * stddev);
  });
}

Tensor Constant(const Shape& shape, float value) {
  return Tensor::Generate(shape, [value](int64_t) { return value; });
}

}  // namespace qtrain::engine
