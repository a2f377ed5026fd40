// Fused CPU kernels for the Langevin chain's elementwise work (see ebm/kernels.py).
//
// TensorFlow runs elementwise math one op at a time, each op a full pass over memory; these
// kernels do in one pass what takes TF four or five. Built with -O3 -march=native -ffast-math
// so the loops vectorise (expf through glibc's libmvec). Inputs are clamped before exp, so no
// infinities arise; NaN inputs come out as NaN.

#include <cmath>
#include <cstdint>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"

namespace {

using tensorflow::OpKernel;
using tensorflow::OpKernelConstruction;
using tensorflow::OpKernelContext;
using tensorflow::Tensor;

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
      const float xc = x < -80.0f ? -80.0f : (x > 80.0f ? 80.0f : x);
      const float s = 1.0f / (1.0f + std::exp(-xc));
      const float y = x * s;
      ap[i] = y;
      dp[i] = s + y * (1.0f - s);
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
      const float gi = gp[i] < -clip ? -clip : (gp[i] > clip ? clip : gp[i]);
      const float v = xp[i] - step * gi;
      op[i] = v < -1.0f ? -1.0f : (v > 1.0f ? 1.0f : v);
    }
  }

 private:
  float step_size_;
  float grad_clip_;
};

// Gaussian noise added and clipped: y = clip(x + noise, -1, 1), where the noise is Box-Muller on
// the uniforms u (2, ceil(n / 2)) in [0, 1): stddev * sqrt(-2 log(1 - u0)) * (cos, sin)(2 pi u1),
// the cosines filling the first half of x (flattened) and the sines the second.
class EbmNoisyOp : public OpKernel {
 public:
  explicit EbmNoisyOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("stddev", &stddev_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& x = ctx->input(0);
    const Tensor& u = ctx->input(1);
    const int64_t n = x.NumElements();
    const int64_t half = (n + 1) / 2;
    OP_REQUIRES(ctx, u.dims() == 2 && u.dim_size(0) == 2 && u.dim_size(1) == half,
                tensorflow::errors::InvalidArgument("uniforms must have shape (2, ", half, "); got ",
                                                    u.shape().DebugString()));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &out));
    const float* xp = x.flat<float>().data();
    const float* u0 = u.flat<float>().data();
    const float* u1 = u0 + half;
    float* op = out->flat<float>().data();
    const float scale = -2.0f * stddev_ * stddev_;
    const float two_pi = 6.283185307179586f, half_pi = 1.5707963267948966f;
    const int64_t full = n / 2;  // pairs whose sine half exists
#pragma omp simd
    for (int64_t i = 0; i < full; ++i) {
      const float r = std::sqrt(scale * std::log(1.0f - u0[i]));
      const float t = two_pi * u1[i];
      // cos as a shifted sin: GCC would fuse sin and cos into sincosf, which does not vectorise.
      const float a = xp[i] + r * std::sin(t + half_pi);
      const float b = xp[i + half] + r * std::sin(t);
      op[i] = a < -1.0f ? -1.0f : (a > 1.0f ? 1.0f : a);
      op[i + half] = b < -1.0f ? -1.0f : (b > 1.0f ? 1.0f : b);
    }
    if (n % 2) {  // odd count: the middle element takes the last cosine only
      const int64_t i = half - 1;
      const float a = xp[i] + std::sqrt(scale * std::log(1.0f - u0[i])) * std::cos(two_pi * u1[i]);
      op[i] = a < -1.0f ? -1.0f : (a > 1.0f ? 1.0f : a);
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
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });
REGISTER_KERNEL_BUILDER(Name("EbmLangevinMove").Device(tensorflow::DEVICE_CPU), EbmLangevinMoveOp);

REGISTER_OP("EbmNoisy")
    .Input("x: float")
    .Input("uniforms: float")
    .Attr("stddev: float")
    .Output("y: float")
    .SetShapeFn([](tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->input(0));
      return absl::OkStatus();
    });
REGISTER_KERNEL_BUILDER(Name("EbmNoisy").Device(tensorflow::DEVICE_CPU), EbmNoisyOp);
