// Gaussian noise for the CPU kernels (kernels.cc, chain.cc): Philox4x32-10 and Box-Muller in
// plain arithmetic, so that loops calling them vectorise (sin/log through glibc's libmvec).
#ifndef EBM_RANDOM_H_
#define EBM_RANDOM_H_

#include <cmath>
#include <cstdint>

namespace ebm {

inline float Clamp(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

// Philox4x32-10 (Salmon et al. 2011, the generator behind TF's stateless ops): words 0 and 1 of
// the block for counter (c0, c1, c2, 0) and key (k0, k1).
inline void Philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t k0, uint32_t k1, uint32_t* r0, uint32_t* r1) {
  uint32_t c3 = 0;
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  *r0 = c0;
  *r1 = c1;
}

// Two independent N(0, stddev^2) draws, scale = -2 stddev^2: Box-Muller on two 24-bit uniforms
// from Philox(c0, c1, c2; key), sqrt(scale * log(1 - u0)) * (cos, sin)(2 pi u1).
inline void Normals(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t k0, uint32_t k1, float scale, float* c, float* s) {
  uint32_t b0, b1;
  Philox(c0, c1, c2, k0, k1, &b0, &b1);
  const float to_unit = 1.0f / 16777216.0f;  // 2^-24
  const float r = std::sqrt(scale * std::log(1.0f - static_cast<float>(b0 >> 8) * to_unit));
  const float t = 6.283185307179586f * static_cast<float>(b1 >> 8) * to_unit;
  // cos as a shifted sin: GCC would fuse sin and cos into sincosf, which does not vectorise.
  *c = r * std::sin(t + 1.5707963267948966f);
  *s = r * std::sin(t);
}

}  // namespace ebm

#endif  // EBM_RANDOM_H_
