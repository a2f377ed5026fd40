// Register-blocked vector kernels for chain.cc: implicit-GEMM blocks over pixel lists, a
// matrix-vector product, horizontal sums, and swish with its derivative. V is one machine vector
// (GCC vector extensions, so the same code builds for AVX-512, AVX2 and other targets).
#ifndef EBM_VECTORS_H_
#define EBM_VECTORS_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

#include "random.h"

namespace ebm {
namespace {  // one copy per library build: builds for other CPUs must not interpose

// Channels are padded to multiples of kLanes; a vector V holds kVec floats, one machine register
// (16 with AVX-512, 8 with AVX, 4 otherwise), and a block keeps up to kAccBudget accumulators.
constexpr int kLanes = 16;
#if defined(__AVX512F__)
constexpr int kVec = 16;
constexpr int kAccBudget = 24;  // of 32 registers
#elif defined(__AVX__)
constexpr int kVec = 8;
constexpr int kAccBudget = 12;  // of 16 registers
#else
constexpr int kVec = 4;
constexpr int kAccBudget = 12;
#endif
typedef float V __attribute__((vector_size(kVec * sizeof(float))));
typedef float Vu __attribute__((vector_size(kVec * sizeof(float)), aligned(4)));  // unaligned access
constexpr int kMaxRows = 8;
constexpr int kMaxVecs = 4;
// Vectors of output channels per block in PixelGemm. With 16 registers a block of 3 pixels x 4
// vectors needs 12 accumulators, 4 weight vectors and a broadcast, one register too many: GCC then
// reads every weight from memory once per pixel (vfmadd231ps with a memory operand), 15 loads for
// 12 FMAs. 6 x 2 keeps its 2 weight vectors in registers (8 loads for 12 FMAs), the AVX2 sgemm
// kernels' shape: the chain ran 11-13% faster on an AVX2 EPYC, with the same sums in the same order.
#if defined(__AVX512F__)
constexpr int kGroupVecs = 4;
#else
constexpr int kGroupVecs = 2;
#endif
constexpr int kFirstRowsMax = 16;  // output pixels per block of the first layer (FirstConv)

inline V Load(const float* p) { return *reinterpret_cast<const Vu*>(p); }
inline void Store(float* p, V v) { *reinterpret_cast<Vu*>(p) = v; }
inline V Splat(float s) { return V{} + s; }
inline int Pad16(int n) { return (n + kLanes - 1) / kLanes * kLanes; }

// out[r * ldo + j] = bias[j] + sum over taps t and k < K of rows(r)[taps[t] + k] * w[(t K + k) ldw + j],
// for j < kVec NV: R output pixels by NV vectors of channels, all in registers. bias may be null.
// rows(r) is the r-th pixel's base: a list of pointers, or a fixed stride known at compile time.
template <int R, int NV, typename Rows>
inline void BlockOf(Rows rows, const int* taps, int ntaps, int K, const float* w, int ldw, const float* bias,
                    float* out, int ldo) {
  V acc[R][NV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = bias ? Load(bias + v * kVec) : V{};
  for (int t = 0; t < ntaps; ++t) {
    const float* p[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) p[r] = rows(r) + taps[t];
    const float* wk = w + static_cast<ptrdiff_t>(t) * K * ldw;
    for (int k = 0; k < K; ++k, wk += ldw) {
      V wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        wv[v] = Load(wk + v * kVec);
        // Held in a register: GCC otherwise folds the load into every pixel's FMA (vfmadd231ps with a
        // memory operand), as it did for 4 x 2 blocks on AVX2: 12 loads per 8 FMAs. An empty asm that
        // may change the value stops the folding; the sums and their order are unchanged.
#if defined(__x86_64__) || defined(__i386__)
        asm("" : "+x"(wv[v]));
#endif
      }
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const V b = Splat(p[r][k]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[r][v] += b * wv[v];
      }
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) Store(out + r * ldo + v * kVec, acc[r][v]);
}

template <int R, int NV>
void Block(const float* const* rows, const int* taps, int ntaps, int K, const float* w, int ldw, const float* bias,
           float* out, int ldo) {
  BlockOf<R, NV>([rows](int r) { return rows[r]; }, taps, ntaps, K, w, ldw, bias, out, ldo);
}

using BlockFn = void (*)(const float* const*, const int*, int, int, const float*, int, const float*, float*, int);

template <int R>
constexpr BlockFn BlockFor(int nv) {
  return nv == 1 ? Block<R, 1> : nv == 2 ? Block<R, 2> : nv == 3 ? Block<R, 3> : Block<R, 4>;
}

inline BlockFn Blocks(int rows, int nv) {
  static const BlockFn table[kMaxRows][kMaxVecs] = {
      {BlockFor<1>(1), BlockFor<1>(2), BlockFor<1>(3), BlockFor<1>(4)},
      {BlockFor<2>(1), BlockFor<2>(2), BlockFor<2>(3), BlockFor<2>(4)},
      {BlockFor<3>(1), BlockFor<3>(2), BlockFor<3>(3), BlockFor<3>(4)},
      {BlockFor<4>(1), BlockFor<4>(2), BlockFor<4>(3), BlockFor<4>(4)},
      {BlockFor<5>(1), BlockFor<5>(2), BlockFor<5>(3), BlockFor<5>(4)},
      {BlockFor<6>(1), BlockFor<6>(2), BlockFor<6>(3), BlockFor<6>(4)},
      {BlockFor<7>(1), BlockFor<7>(2), BlockFor<7>(3), BlockFor<7>(4)},
      {BlockFor<8>(1), BlockFor<8>(2), BlockFor<8>(3), BlockFor<8>(4)}};
  return table[rows - 1][nv - 1];
}

// A GEMM over pixel lists: for each pixel i, out[i] (width ld) = Block over rows base + offs[i].
// Block i0.. (n <= kMaxRows pixels) goes to out + i0 * ld with advance, else to out (a tile);
// fn(i0, n, where) follows each block.
template <typename Epilogue>
void PixelGemm(const float* base, const std::vector<int>& offs, const std::vector<int>& taps, int K,
               const float* w, int ld, const float* bias, float* out, bool advance, Epilogue fn) {
  const int nv = ld / kVec;
  const int per = std::max(1, std::min(kMaxRows, kAccBudget / std::min(nv, kGroupVecs)));
  const float* rows[kMaxRows];
  const int count = static_cast<int>(offs.size());
  for (int i0 = 0; i0 < count; i0 += per) {
    const int n = std::min(per, count - i0);
    float* tile = advance ? out + static_cast<ptrdiff_t>(i0) * ld : out;
    for (int r = 0; r < n; ++r) rows[r] = base + offs[i0 + r];
    for (int v0 = 0; v0 < nv; v0 += kGroupVecs) {
      const int nvs = std::min(kGroupVecs, nv - v0);
      Blocks(n, nvs)(rows, taps.data(), static_cast<int>(taps.size()), K, w + v0 * kVec, ld,
                     bias ? bias + v0 * kVec : nullptr, tile + v0 * kVec, ld);
    }
    fn(i0, n, tile);
  }
}

// Lane l of the result is the sum of the kVec lanes of v[l].
inline V SumEach(const V* v) {
#if defined(__AVX512F__)
  __m512 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i) {
    const __m512 a = (__m512)v[2 * i], b = (__m512)v[2 * i + 1];
    s1[i] = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  }
  for (int i = 0; i < 4; ++i)
    s2[i] = _mm512_add_ps(_mm512_shuffle_ps(s1[2 * i], s1[2 * i + 1], 0x44),
                          _mm512_shuffle_ps(s1[2 * i], s1[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)
    s3[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s2[2 * i], s2[2 * i + 1], 0x88),
                          _mm512_shuffle_f32x4(s2[2 * i], s2[2 * i + 1], 0xDD));
  return (V)_mm512_add_ps(_mm512_shuffle_f32x4(s3[0], s3[1], 0x88), _mm512_shuffle_f32x4(s3[0], s3[1], 0xDD));
#elif defined(__AVX__)
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps((__m256)v[0], (__m256)v[1]), _mm256_hadd_ps((__m256)v[2], (__m256)v[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps((__m256)v[4], (__m256)v[5]), _mm256_hadd_ps((__m256)v[6], (__m256)v[7]));
  return (V)_mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
#else
  V out;
  for (int l = 0; l < kVec; ++l) {
    float s = 0.0f;
    for (int i = 0; i < kVec; ++i) s += v[l][i];
    out[l] = s;
  }
  return out;
#endif
}

// exp(x) for |x| <= 80 in plain arithmetic, so that loops using it vectorise inline: 2^n 2^f with
// n = round(x log2 e) and |f| <= 1/2, 2^f by its degree-7 Taylor polynomial (relative error < 1e-8,
// below float rounding).
inline float Exp(float x) {
  const float t = x * 1.44269504088896341f;
  const float n = std::floor(t + 0.5f);
  const float f = (t - n) * 0.693147180559945309f;
  float p = 1.0f / 5040;
  p = p * f + 1.0f / 720;
  p = p * f + 1.0f / 120;
  p = p * f + 1.0f / 24;
  p = p * f + 1.0f / 6;
  p = p * f + 0.5f;
  p = p * f + 1.0f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// a = swish(h) = h sigmoid(h) and d = its derivative; a may be h.
inline void Swish(float* h, int n, float* a, float* d) {
#pragma omp simd
  for (int i = 0; i < n; ++i) {
    const float x = h[i];
    const float s = 1.0f / (1.0f + Exp(-ebm::Clamp(x, -80.0f, 80.0f)));
    const float y = x * s;
    a[i] = y;
    d[i] = s + y * (1.0f - s);
  }
}

// y[j] (+)= sum_i x[i] W[i][j] for j < kVec NV, W rows ldw apart: two partial sums per vector.
template <int NV>
void Gemv(const float* w, int ldw, const float* x, int n, float* y, bool add) {
  V acc[2][NV] = {};
  int i = 0;
  for (; i + 2 <= n; i += 2) {
    const V b0 = Splat(x[i]), b1 = Splat(x[i + 1]);
    const float* r0 = w + static_cast<size_t>(i) * ldw;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      acc[0][v] += b0 * Load(r0 + v * kVec);
      acc[1][v] += b1 * Load(r0 + ldw + v * kVec);
    }
  }
  if (i < n)
    for (int v = 0; v < NV; ++v) acc[0][v] += Splat(x[i]) * Load(w + static_cast<size_t>(i) * ldw + v * kVec);
  for (int v = 0; v < NV; ++v) Store(y + v * kVec, (add ? Load(y + v * kVec) : V{}) + acc[0][v] + acc[1][v]);
}

// y (+)= x W for W (n, m), m a multiple of 16 and rows m apart.
inline void VecMat(const float* w, const float* x, int n, int m, float* y, bool add) {
  for (int j = 0; j < m; j += kMaxVecs * kVec) {
    switch (std::min(kMaxVecs, (m - j) / kVec)) {
      case 1: Gemv<1>(w + j, m, x, n, y + j, add); break;
      case 2: Gemv<2>(w + j, m, x, n, y + j, add); break;
      case 3: Gemv<3>(w + j, m, x, n, y + j, add); break;
      default: Gemv<4>(w + j, m, x, n, y + j, add);
    }
  }
}

}  // namespace
}  // namespace ebm

#endif  // EBM_VECTORS_H_
