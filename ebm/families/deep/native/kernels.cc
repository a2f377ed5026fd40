// Fused CPU kernels for the Langevin chain's elementwise work (see ebm/kernels.py).
//
// TensorFlow runs elementwise math one op at a time, each op a full pass over memory; these
// kernels do in one pass what takes TF four or five. Built with -O3 -march=native -ffast-math
// so the loops vectorise (expf through glibc's libmvec). Inputs are clamped before exp, so no
// infinities arise; NaN inputs come out as NaN.

#include <cmath>
#include <cstdint>

#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "random.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;
using ebm::Clamp;


// swish(h) = h * sigmoid(h) and its derivative s + h s (1 - s), from one read of h.
class EbmSwishOp : public OpKernel {
 public:
  explicit EbmSwishOp(OpKernelConstruction* ctx) : OpKernel(ctx) {}

  void Compute(OpKernelContext* ctx) override {
    const Tensor& h = ctx->input(0);
    Tensor* a = nullptr;
    Tensor* d = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, h.shape(), &a));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, h.shape(), &d));
    const float* hp = h.flat<float>().data();
    float* ap = a->flat<float>().data();
    float* dp = d->flat<float>().data();
    const int64_t n = h.NumElements();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float x = hp[i];
      const float xc = Clamp(x, -80.0f, 80.0f);
      const float e = std::exp(-xc);
      const float s = 1.0f / (1.0f + e);
      const float y = x * s;
      ap[i] = y;
      dp[i] = s + y * (e * s);  // 1 - s as e * s: exact where s rounds near 1 (a fast reciprocal is off by an ulp)
    }
  }
};

// The Langevin move: clip(x - step_size * clip(grad, -grad_clip, grad_clip), -1, 1).
class EbmLangevinMoveOp : public OpKernel {
 public:
  explicit EbmLangevinMoveOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("step_size", &step_size_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("grad_clip", &grad_clip_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& g = ctx->input(1);
    OP_REQUIRES(ctx, x.shape() == g.shape(),
                tensorflow::errors::InvalidArgument("state and gradient shapes differ: ", x.shape().DebugString(),
                                                    " vs ", g.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    const float* xp = x.flat<float>().data();
    const float* gp = g.flat<float>().data();
    float* op = out->flat<float>().data();
    const float step = step_size_, clip = grad_clip_;
    const int64_t n = x.NumElements();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      op[i] = Clamp(xp[i] - step * Clamp(gp[i], -clip, clip), -1.0f, 1.0f);
    }
  }

 private:
  float step_size_;
  float grad_clip_;
};

// Gaussian noise added and clipped: y = clip(x + noise, -1, 1). Pair j of the flattened x
// (elements j and j + ceil(n / 2)) takes Box-Muller on two 24-bit uniforms from Philox with
// counter j and the seed as key: stddev * sqrt(-2 log(1 - u0)) * (cos, sin)(2 pi u1).
class EbmNoisyOp : public OpKernel {
 public:
  explicit EbmNoisyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stddev", &stddev_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& seed = ctx->input(1);
    OP_REQUIRES(ctx, seed.NumElements() == 2,
                tensorflow::errors::InvalidArgument("seed must have 2 elements; got ", seed.shape().DebugString()));
    const uint32_t k0 = static_cast<uint32_t>(seed.flat<int32_t>()(0));
    const uint32_t k1 = static_cast<uint32_t>(seed.flat<int32_t>()(1));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    const int64_t n = x.NumElements();
    const int64_t half = (n + 1) / 2;
    const float* xp = x.flat<float>().data();
    float* op = out->flat<float>().data();
    const float scale = -2.0f * stddev_ * stddev_;
    const int64_t pairs = n / 2;  // pairs whose sine half exists; an odd n leaves one cosine
#pragma omp simd
    for (int64_t j = 0; j < pairs; ++j) {
      float c, s;
      ebm::Normals(static_cast<uint32_t>(j), static_cast<uint32_t>(static_cast<uint64_t>(j) >> 32), 0, k0, k1, scale, &c, &s);
      op[j] = Clamp(xp[j] + c, -1.0f, 1.0f);
      op[j + half] = Clamp(xp[j + half] + s, -1.0f, 1.0f);
    }
    if (n % 2) {
      float c, s;
      ebm::Normals(static_cast<uint32_t>(half - 1), static_cast<uint32_t>(static_cast<uint64_t>(half - 1) >> 32), 0, k0, k1,
                   scale, &c, &s);
      op[half - 1] = Clamp(xp[half - 1] + c, -1.0f, 1.0f);
    }
  }

 private:
  float stddev_;
};

}  // namespace

REGISTER_OP("EbmSwish")
    .Input("h: float")
    .Output("a: float")
    .Output("derivative: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      c->set_output(1, c->input(0));
      return absl::OkStatus();
    });
REGISTER_KERNEL_BUILDER(Name("EbmSwish").Device(tensorflow::DEVICE_CPU), EbmSwishOp);

REGISTER_OP("EbmLangevinMove")
    .Input("x: float")
    .Input("grad: float")
    .Attr("step_size: float")
    .Attr("grad_clip: float")
    .Output("y: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_KERNEL_BUILDER(Name("EbmLangevinMove").Device(tensorflow::DEVICE_CPU), EbmLangevinMoveOp);

REGISTER_OP("EbmNoisy")
    .Input("x: float")
    .Input("seed: int32")
    .Attr("stddev: float")
    .Output("y: float")
    .SetShapeFn(tensorflow::shape_inference::UnchangedShape);
REGISTER_KERNEL_BUILDER(Name("EbmNoisy").Device(tensorflow::DEVICE_CPU), EbmNoisyOp);
