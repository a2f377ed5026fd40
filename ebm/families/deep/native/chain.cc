// A whole Langevin chain of the energy network in one CPU op (see ebm/kernels.py).
//
// The network is build_energy_network's: stride-2 "SAME" convolutions with swish, flatten, a
// swish dense layer, a linear dense layer to E(x). Every chain is independent, so each image
// runs all its steps (noise, forward, input-gradient, move) on one thread with its activations
// in the core's cache, and images are spread over TF's intra-op threads. The convolutions are
// implicit GEMMs with a register-blocked kernel (Block); the input-gradient of a stride-2 conv
// is computed per parity class of the input pixels, where it is again a plain correlation.
//
// Layouts: activations are channels-last with channels padded to a multiple of 16 (the padded
// channels carry zero weights, so they stay zero); each layer's input buffer has the "SAME"
// zero border built in, and each output-gradient buffer a zero margin, so no loop tests bounds.

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "random.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "vectors.h"

namespace ebm {
namespace {

using tensorflow::OpInputList;
using tensorflow::OpOutputList;
using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using tensorflow::errors::InvalidArgument;

// One stride-2 "SAME" convolution: geometry, packed weights, and the pixel and tap offsets.
struct Conv {
  int hi, wi, ci, cip;  // input; cip = channel stride of the input buffer
  int ho, wo, co, cop;  // output; cop = co rounded up to 16
  int k, pbh, pbw, hp, wp;  // padding before, padded input size
  int m, hy, wy;            // output-gradient buffer: margin m, (ho + 2m) x (wo + 2m) x cop
  std::vector<float> w;     // [k * k][ci][cop]
  std::vector<float> bias;  // [cop]
  std::vector<int> taps;    // forward: tap offsets in the input buffer
  std::vector<int> starts;  // forward: window start of each output pixel in the input buffer
  std::vector<int> outs;    // forward: where each output pixel's activations go (next input or flat)
  // Input-gradient per parity class (qy, qx) of the padded input coordinates.
  struct Class {
    std::vector<int> taps;    // offsets in the output-gradient buffer
    std::vector<float> w;     // [taps][co][cip]
    std::vector<float> w1;    // one input channel: [taps][cop]
    std::vector<int> starts;  // per input pixel of the class: its base in the output-gradient buffer
    std::vector<int> pixels;  // ... and its index iy * wi + ix
    std::vector<int> targets;  // ... and its offset in the previous layer's output-gradient buffer
  } cls[4];

  int InputOffset(int y, int x) const { return ((y + pbh) * wp + x + pbw) * cip; }
  int GradOffset(int y, int x) const { return ((y + m) * wy + x + m) * cop; }
  int BufferSize() const { return hp * wp * cip; }
  int GradSize() const { return hy * wy * cop; }
};

Conv MakeConv(int hi, int wi, int ci, int cip, const Tensor& kernel, const Tensor& bias) {
  Conv c;
  c.hi = hi, c.wi = wi, c.ci = ci, c.cip = cip;
  c.k = static_cast<int>(kernel.dim_size(0));
  c.co = static_cast<int>(kernel.dim_size(3));
  c.cop = Pad16(c.co);
  c.ho = (hi + 1) / 2, c.wo = (wi + 1) / 2;
  const int th = std::max((c.ho - 1) * 2 + c.k - hi, 0), tw = std::max((c.wo - 1) * 2 + c.k - wi, 0);
  c.pbh = th / 2, c.pbw = tw / 2, c.hp = hi + th, c.wp = wi + tw;
  c.m = c.k / 2 + 1, c.hy = c.ho + 2 * c.m, c.wy = c.wo + 2 * c.m;
  const float* kw = kernel.flat<float>().data();  // HWIO
  c.w.assign(static_cast<size_t>(c.k) * c.k * ci * c.cop, 0.0f);
  for (int t = 0; t < c.k * c.k; ++t)
    for (int i = 0; i < ci; ++i)
      for (int o = 0; o < c.co; ++o) c.w[(t * ci + i) * c.cop + o] = kw[(t * ci + i) * c.co + o];
  c.bias.assign(c.cop, 0.0f);
  std::copy_n(bias.flat<float>().data(), c.co, c.bias.begin());
  for (int ky = 0; ky < c.k; ++ky)
    for (int kx = 0; kx < c.k; ++kx) c.taps.push_back((ky * c.wp + kx) * cip);
  for (int oy = 0; oy < c.ho; ++oy)
    for (int ox = 0; ox < c.wo; ++ox) c.starts.push_back((2 * oy * c.wp + 2 * ox) * cip);
  // Input pixel at padded (Y, X) receives tap (ky, kx) from output (Y - ky, X - kx) / 2 when both
  // differences are even: the taps of one parity class, read relative to ((Y - qy) / 2, (X - qx) / 2).
  for (int q = 0; q < 4; ++q) {
    Conv::Class& cl = c.cls[q];
    const int qy = q / 2, qx = q % 2;
    for (int ky = qy; ky < c.k; ky += 2)
      for (int kx = qx; kx < c.k; kx += 2) {
        cl.taps.push_back(-(((ky - qy) / 2) * c.wy + (kx - qx) / 2) * c.cop);
        for (int o = 0; o < c.cop && ci == 1; ++o) cl.w1.push_back(o < c.co ? kw[(ky * c.k + kx) * c.co + o] : 0.0f);
        for (int o = 0; o < c.co; ++o)
          for (int i = 0; i < cip; ++i)
            cl.w.push_back(i < ci ? kw[((ky * c.k + kx) * ci + i) * c.co + o] : 0.0f);
      }
    for (int iy = 0; iy < hi; ++iy)
      for (int ix = 0; ix < wi; ++ix) {
        const int Y = iy + c.pbh, X = ix + c.pbw;
        if (Y % 2 != qy || X % 2 != qx) continue;
        cl.starts.push_back(c.GradOffset((Y - qy) / 2, (X - qx) / 2));
        cl.pixels.push_back(iy * wi + ix);
      }
  }
  return c;
}

// The network, packed once per call and shared read-only by the threads.
struct Net {
  int h, w;  // image size (one channel)
  std::vector<Conv> convs;
  int units, flat;            // dense layer width and flattened size, both padded to 16
  std::vector<float> dense;   // [flat][units]
  std::vector<float> denseT;  // [units][flat]
  std::vector<float> dense_bias, out_w;  // padded to units
  float out_bias;
};

// One thread's buffers for one chain at a time.
struct Work {
  std::vector<std::vector<float>> in, d, dy;  // per conv: input buffer, swish derivative, output gradient
  std::vector<float> flat, act, hd, ad, dd, dh, da, grad, noisy, tile;

  explicit Work(const Net& net) {
    for (const Conv& c : net.convs) {
      in.emplace_back(c.BufferSize() + 2 * kFirstRowsMax, 0.0f);  // slack for FirstConvBlock
      d.emplace_back(static_cast<size_t>(c.ho) * c.wo * c.cop + kFirstRowsMax * c.cop, 0.0f);  // and FirstConv
      act.resize(std::max(act.size(), d.back().size()));
      dy.emplace_back(c.GradSize(), 0.0f);
    }
    flat.assign(net.flat, 0.0f);
    hd.assign(net.units, 0.0f), ad = dd = dh = hd;
    da.assign(net.flat, 0.0f);
    grad.assign(net.h * net.w, 0.0f), noisy = grad;
    int widest = 0;
    for (const Conv& c : net.convs) widest = std::max({widest, c.cop, c.cip});
    tile.assign(static_cast<size_t>(kMaxRows) * Pad16(widest), 0.0f);
  }
};

// The first layer on a one-channel image: R consecutive output pixels of a row read the input
// at a fixed stride of 2, so the broadcasts need no row pointers. Reads up to 2 R floats past the
// row (the buffer has that slack); only the first n rows of the tile are meaningful.
template <int R, int NV>
void FirstConvBlock(const float* in, const int* taps, int ntaps, const float* w, const float* bias, float* out) {
  BlockOf<R, NV>([in](int r) { return in + 2 * r; }, taps, ntaps, 1, w, NV * kVec, bias, out, NV * kVec);
}

// The first layer's pre-activations into out (pixels x cop; R rows of slack at the end).
constexpr int FirstRows(int nv) { return std::min(kFirstRowsMax, kAccBudget / nv); }

template <int R, int NV>
void FirstConv(const Conv& c, const float* in, float* out) {
  for (int oy = 0; oy < c.ho; ++oy)
    for (int ox = 0; ox < c.wo; ox += R) {
      const int i0 = oy * c.wo + ox;
      FirstConvBlock<R, NV>(in + c.starts[i0], c.taps.data(), static_cast<int>(c.taps.size()), c.w.data(),
                            c.bias.data(), out + static_cast<ptrdiff_t>(i0) * c.cop);
    }
}

// E(x) of the image in work.in[0] (noised state, border zero); leaves the activations' derivatives.
float Forward(const Net& net, Work& work) {
  const int n = static_cast<int>(net.convs.size());
  for (int l = 0; l < n; ++l) {
    const Conv& c = net.convs[l];
    float* dst = l + 1 < n ? work.in[l + 1].data() : work.flat.data();
    float* deriv = work.d[l].data();
    const float* in = work.in[l].data();
    // pre-activations into deriv, then swish over the whole layer: a to act, the derivative in place
    const int nv = c.cop / kVec;
    if (l == 0 && c.ci == 1 && nv == 1) {
      FirstConv<FirstRows(1), 1>(c, in, deriv);
    } else if (l == 0 && c.ci == 1 && nv == 2) {
      FirstConv<FirstRows(2), 2>(c, in, deriv);
    } else if (l == 0 && c.ci == 1 && nv == 3) {
      FirstConv<FirstRows(3), 3>(c, in, deriv);
    } else if (l == 0 && c.ci == 1 && nv == 4) {
      FirstConv<FirstRows(4), 4>(c, in, deriv);
    } else {
      PixelGemm(in, c.starts, c.taps, c.ci, c.w.data(), c.cop, c.bias.data(), deriv, true, [](int, int, float*) {});
    }
    const int size = c.ho * c.wo * c.cop;
    if (l + 1 < n) {
      float* act = work.act.data();
      Swish(deriv, size, act, deriv);
      for (int p = 0; p < c.ho * c.wo; ++p) std::copy_n(act + p * c.cop, c.cop, dst + c.outs[p]);
    } else {
      Swish(deriv, size, dst, deriv);
    }
  }
  std::copy(net.dense_bias.begin(), net.dense_bias.end(), work.hd.begin());
  VecMat(net.dense.data(), work.flat.data(), net.flat, net.units, work.hd.data(), true);
  Swish(work.hd.data(), net.units, work.ad.data(), work.dd.data());
  float e = net.out_bias;
  for (int u = 0; u < net.units; ++u) e += work.ad[u] * net.out_w[u];
  return e;
}

// The image gradient of the conv stack's first layer (one input channel): per input pixel, a dot
// product of the output gradients with the kernel over the taps of its parity class. kVec pixels
// of one class row are done together: their output-gradient rows are COP floats apart (COP = the
// padded channel count), and SumEach turns their kVec dot products into one vector.
template <int COP>
void FirstLayerRun(const Conv::Class& cl, int i0, const float* dy, float* grad) {
  V acc[kVec] = {};
  const float* base = dy + cl.starts[i0];
  for (size_t t = 0; t < cl.taps.size(); ++t) {
    const float* p = base + cl.taps[t];
#pragma GCC unroll 4
    for (int v = 0; v < COP / kVec; ++v) {
      const V wv = Load(cl.w1.data() + t * COP + v * kVec);
#pragma GCC unroll 16
      for (int r = 0; r < kVec; ++r) acc[r] += Load(p + r * COP + v * kVec) * wv;
    }
  }
  const V sums = SumEach(acc);
  for (int r = 0; r < kVec; ++r) grad[cl.pixels[i0 + r]] = sums[r];
}

// One pixel of the same, for any channel count.
inline float FirstLayerPixel(const Conv& c, const Conv::Class& cl, int i, const float* dy) {
  float s = 0.0f;
  for (size_t t = 0; t < cl.taps.size(); ++t) {
    const float* p = dy + cl.starts[i] + cl.taps[t];
    const float* wt = cl.w1.data() + t * c.cop;
    for (int o = 0; o < c.co; ++o) s += p[o] * wt[o];
  }
  return s;
}

template <int COP>
void FirstLayerGrad(const Conv& c, const float* dy, float* grad) {
  for (const Conv::Class& cl : c.cls) {
    const int count = static_cast<int>(cl.pixels.size());
    int i = 0;
    while (i < count) {
      const bool run = COP > 0 && i + kVec <= count && cl.starts[i + kVec - 1] == cl.starts[i] + (kVec - 1) * COP;
      if (run) {
        FirstLayerRun<COP>(cl, i, dy, grad);
        i += kVec;
      } else {
        grad[cl.pixels[i]] = FirstLayerPixel(c, cl, i, dy);
        ++i;
      }
    }
  }
}

// After Forward: the output gradients of every layer's pre-activations (work.dy, work.dh) and
// dE/d(image) into work.grad.
void Backward(const Net& net, Work& work) {
  const int n = static_cast<int>(net.convs.size()), F = net.flat, U = net.units;
  for (int u = 0; u < U; ++u) work.dh[u] = net.out_w[u] * work.dd[u];
  float* da = work.da.data();
  VecMat(net.denseT.data(), work.dh.data(), U, F, da, false);
  {
    const Conv& c = net.convs[n - 1];
    const float* deriv = work.d[n - 1].data();
    for (int oy = 0; oy < c.ho; ++oy)
      for (int ox = 0; ox < c.wo; ++ox) {
        const int p = oy * c.wo + ox;
        float* dst = work.dy[n - 1].data() + c.GradOffset(oy, ox);
#pragma omp simd
        for (int j = 0; j < c.cop; ++j) dst[j] = da[p * c.cop + j] * deriv[p * c.cop + j];
      }
  }
  for (int l = n - 1; l >= 1; --l) {
    const Conv& c = net.convs[l];
    const float* deriv = work.d[l - 1].data();
    float* dst = work.dy[l - 1].data();
    for (const Conv::Class& cl : c.cls) {
      PixelGemm(work.dy[l].data(), cl.starts, cl.taps, c.co, cl.w.data(), c.cip, nullptr, work.tile.data(), false,
                [&](int i0, int count, float* tile) {
                  for (int r = 0; r < count; ++r) {
                    float* g = dst + cl.targets[i0 + r];
                    const float* dv = deriv + cl.pixels[i0 + r] * c.cip;
                    const float* t = tile + r * c.cip;
#pragma omp simd
                    for (int j = 0; j < c.cip; ++j) g[j] = t[j] * dv[j];
                  }
                });
    }
  }
  const Conv& first = net.convs[0];
  const float* dy = work.dy[0].data();
  float* grad = work.grad.data();
  switch (first.cop) {
    case 16: FirstLayerGrad<16>(first, dy, grad); break;
    case 32: FirstLayerGrad<32>(first, dy, grad); break;
    case 48: FirstLayerGrad<48>(first, dy, grad); break;
    case 64: FirstLayerGrad<64>(first, dy, grad); break;
    default: FirstLayerGrad<0>(first, dy, grad);
  }
}

// The network from an op's inputs 3.. (conv_kernels, conv_biases, dense and output weights), packed
// for the kernels above (x_name: what the error calls x); false after setting the op's error status.
#define REQUIRE(cond, status)    \
  if (!(cond)) {                 \
    ctx->CtxFailure(status);     \
    return false;                \
  }
bool PackNet(OpKernelContext* ctx, const Tensor& x, const char* x_name, Net* out) {
  Net& net = *out;
  OpInputList kernels, biases;
  REQUIRE(ctx->input_list("conv_kernels", &kernels).ok() && ctx->input_list("conv_biases", &biases).ok() &&
              kernels.size() == biases.size(),
          InvalidArgument("conv_kernels and conv_biases must be lists of the same length"));
  const Tensor& dense = ctx->input(3 + 2 * kernels.size());
  const Tensor& dense_bias = ctx->input(4 + 2 * kernels.size());
  const Tensor& out_kernel = ctx->input(5 + 2 * kernels.size());
  const Tensor& out_bias = ctx->input(6 + 2 * kernels.size());
  REQUIRE(x.dims() == 4 && x.dim_size(3) == 1,
          InvalidArgument(x_name, " must be (batch, height, width, 1); got ", x.shape().DebugString()));
  net.h = static_cast<int>(x.dim_size(1)), net.w = static_cast<int>(x.dim_size(2));
  int h = net.h, w = net.w, ci = 1, cip = 1;
  for (int l = 0; l < kernels.size(); ++l) {
    const Tensor& k = kernels[l];
    REQUIRE(k.dims() == 4 && k.dim_size(0) == k.dim_size(1) && k.dim_size(2) == ci,
            InvalidArgument("conv kernel ", l, " must be (k, k, ", ci, ", filters); got ", k.shape().DebugString()));
    REQUIRE(biases[l].NumElements() == k.dim_size(3),
            InvalidArgument("conv bias ", l, " must have ", k.dim_size(3), " elements"));
    net.convs.push_back(MakeConv(h, w, ci, cip, k, biases[l]));
    const Conv& c = net.convs.back();
    h = c.ho, w = c.wo, ci = c.co, cip = c.cop;
  }
  for (size_t l = 0; l < net.convs.size(); ++l) {
    Conv& c = net.convs[l];
    for (int p = 0; p < c.ho * c.wo; ++p)
      c.outs.push_back(l + 1 < net.convs.size() ? net.convs[l + 1].InputOffset(p / c.wo, p % c.wo) : p * c.cop);
    if (l == 0) continue;
    for (Conv::Class& cl : c.cls)
      for (int p : cl.pixels) cl.targets.push_back(net.convs[l - 1].GradOffset(p / c.wi, p % c.wi));
  }
  const int units = static_cast<int>(dense.dims() == 2 ? dense.dim_size(1) : 0);
  REQUIRE(dense.dims() == 2 && dense.dim_size(0) == h * w * ci,
          InvalidArgument("dense kernel must be (", h * w * ci, ", units); got ", dense.shape().DebugString()));
  REQUIRE(dense_bias.NumElements() == units && out_kernel.NumElements() == units && out_bias.NumElements() == 1,
          InvalidArgument("dense bias, output kernel and output bias must have ", units, ", ", units, " and 1 elements"));
  const int up = Pad16(units);
  net.units = up;
  net.flat = h * w * cip;
  net.dense.assign(static_cast<size_t>(net.flat) * up, 0.0f);
  net.denseT.assign(static_cast<size_t>(net.flat) * up, 0.0f);
  const float* dk = dense.flat<float>().data();
  for (int p = 0; p < h * w; ++p)
    for (int c = 0; c < ci; ++c)
      for (int u = 0; u < units; ++u) {
        const float v = dk[(static_cast<size_t>(p) * ci + c) * units + u];
        net.dense[(static_cast<size_t>(p) * cip + c) * up + u] = v;
        net.denseT[static_cast<size_t>(u) * net.flat + p * cip + c] = v;
      }
  net.dense_bias.assign(up, 0.0f);
  net.out_w.assign(up, 0.0f);
  std::copy_n(dense_bias.flat<float>().data(), units, net.dense_bias.begin());
  std::copy_n(out_kernel.flat<float>().data(), units, net.out_w.begin());
  net.out_bias = out_bias.flat<float>()(0);
  return true;
}
#undef REQUIRE

class EbmLangevinChainOp : public OpKernel {
 public:
  explicit EbmLangevinChainOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("step_size", &step_size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("noise", &noise_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("grad_clip", &grad_clip_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& seed = ctx->input(1);
    const Tensor& steps_t = ctx->input(2);
    OP_REQUIRES(ctx, seed.NumElements() == 2 || seed.NumElements() == 3,
                InvalidArgument("seed must have 2 elements (key) or 3 (key, first step); got ", seed.shape().DebugString()));
    OP_REQUIRES(ctx, steps_t.NumElements() == 1 && steps_t.flat<int32_t>()(0) >= 0,
                InvalidArgument("steps must be one non-negative number"));
    const int steps = steps_t.flat<int32_t>()(0);

    Net net;
    if (!PackNet(ctx, x, "state", &net)) return;

    Tensor* y = nullptr;
    Tensor* sums = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &y));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, tensorflow::TensorShape({steps, 4}), &sums));
    const int64_t batch = x.dim_size(0), pixels = static_cast<int64_t>(net.h) * net.w;
    std::copy_n(x.flat<float>().data(), batch * pixels, y->flat<float>().data());
    std::vector<float> per_chain(static_cast<size_t>(batch) * steps * 4, 0.0f);
    const uint32_t k0 = static_cast<uint32_t>(seed.flat<int32_t>()(0)), k1 = static_cast<uint32_t>(seed.flat<int32_t>()(1));
    // the noise of a step is counted by its absolute step, so a chain run in segments draws
    // the same noise as in one go
    const uint32_t step0 = seed.NumElements() == 3 ? static_cast<uint32_t>(seed.flat<int32_t>()(2)) : 0u;
    float* states = y->flat<float>().data();
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
    std::vector<std::unique_ptr<Work>> works(pool->NumThreads() + 1);  // one per thread, made on first use
    auto run = [&](int64_t begin, int64_t end, int thread) {
      if (!works[thread]) works[thread] = std::make_unique<Work>(net);
      for (int64_t b = begin; b < end; ++b)
        Chain(net, *works[thread], states + b * pixels, b, steps, k0, k1, step0, &per_chain[b * steps * 4]);
    };
    pool->ParallelForWithWorkerId(batch, tsl::thread::ThreadPool::SchedulingParams::Fixed(1), run);
    float* out = sums->flat<float>().data();
    for (int s = 0; s < steps * 4; ++s) {
      double total = 0.0;  // fixed order: the same result however the chains were scheduled
      for (int64_t b = 0; b < batch; ++b) total += per_chain[b * steps * 4 + s];
      out[s] = static_cast<float>(total);
    }
  }

 private:
  // Runs one chain in place; stats gets E, E^2, |grad|, |grad|^2 per step.
  void Chain(const Net& net, Work& work, float* x, int64_t index, int steps, uint32_t k0, uint32_t k1, uint32_t step0,
             float* stats) const {
    const int n = net.h * net.w, half = (n + 1) / 2, pairs = n / 2;
    const float scale = -2.0f * noise_ * noise_, step = step_size_, clip = grad_clip_;
    const Conv& first = net.convs[0];
    float* noisy = work.noisy.data();
    for (int s = 0; s < steps; ++s) {
      if (noise_ > 0) {
        const uint32_t image = static_cast<uint32_t>(index), at = step0 + static_cast<uint32_t>(s);
#pragma omp simd
        for (int j = 0; j < pairs; ++j) {
          float c, sn;
          Normals(static_cast<uint32_t>(j), image, at, k0, k1, scale, &c, &sn);
          noisy[j] = Clamp(x[j] + c, -1.0f, 1.0f);
          noisy[j + half] = Clamp(x[j + half] + sn, -1.0f, 1.0f);
        }
        if (n % 2) {
          float c, sn;
          Normals(static_cast<uint32_t>(half - 1), image, at, k0, k1, scale, &c, &sn);
          noisy[half - 1] = Clamp(x[half - 1] + c, -1.0f, 1.0f);
        }
      } else {
        std::copy_n(x, n, noisy);
      }
      float* in = work.in[0].data();
      for (int r = 0; r < net.h; ++r) std::copy_n(noisy + r * net.w, net.w, in + first.InputOffset(r, 0));
      const float e = Forward(net, work);
      Backward(net, work);
      const float* g = work.grad.data();
      float g2 = 0.0f;
#pragma omp simd reduction(+ : g2)
      for (int i = 0; i < n; ++i) {
        g2 += g[i] * g[i];
        x[i] = Clamp(noisy[i] - step * Clamp(g[i], -clip, clip), -1.0f, 1.0f);
      }
      stats[4 * s] = e, stats[4 * s + 1] = e * e, stats[4 * s + 2] = std::sqrt(g2), stats[4 * s + 3] = g2;
    }
  }

  float step_size_, noise_, grad_clip_;
};

}  // namespace
}  // namespace ebm

#ifndef EBM_CHAIN_OP
#define EBM_CHAIN_OP "EbmLangevinChain"  // another name lets benchmarks load two builds side by side
#endif

REGISTER_OP(EBM_CHAIN_OP)
    .Input("x: float")
    .Input("seed: int32")
    .Input("steps: int32")
    .Input("conv_kernels: n * float")
    .Input("conv_biases: n * float")
    .Input("dense_kernel: float")
    .Input("dense_bias: float")
    .Input("out_kernel: float")
    .Input("out_bias: float")
    .Attr("n: int >= 1")
    .Attr("step_size: float")
    .Attr("noise: float")
    .Attr("grad_clip: float")
    .Output("y: float")
    .Output("sums: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->Matrix(c->UnknownDim(), 4));
      return absl::OkStatus();
    });
REGISTER_KERNEL_BUILDER(Name(EBM_CHAIN_OP).Device(tensorflow::DEVICE_CPU), ebm::EbmLangevinChainOp);
