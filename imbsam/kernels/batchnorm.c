/* Training-mode batch normalisation of NCHW float32, optionally followed by a residual add and a ReLU,
 * as MindSpore "aot" custom operators (imbsam.kernels.batchnorm).
 *
 * The statistics, the per-channel sums and the input gradient are in double: the gradient's three terms
 * nearly cancel when the output gradient lies close to the span of 1 and the normalised input, as it
 * does deep in a trained network, and float32 arithmetic there loses digits (tests/unit/test_batchnorm.py:
 * MindSpore's own kernel is 3.7e-4 off a float64 reference, this one 7e-8). Channels are independent,
 * so they are split between threads.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

enum { RELU = 1, RESIDUAL = 2 };

/* Built where it runs, but a home directory may be shared by machines of different x86-64
   generations: one copy per instruction set, picked when the library loads. */
#if defined(__x86_64__)
#define VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* x [, residual], gamma, beta, running mean, running variance, (eps, momentum) -> y, batch mean,
   1 / sqrt(batch variance + eps); the statistics in double, for the backward pass, whose cancellation would
   magnify their float32 rounding. As MindSpore's own BatchNorm kernel, it moves the running mean and
   variance in place, by `momentum` towards the batch mean and unbiased variance. */
VECTOR_CLONES static int forward(int flags, void **params, int64_t **shapes, const char **dtypes) {
    if (strcmp(dtypes[0], "float32") != 0) return 1;
    const int r = (flags & RESIDUAL) != 0;
    const float *x = params[0], *residual = r ? params[1] : NULL;
    const float *gamma = params[1 + r], *beta = params[2 + r], *settings = params[5 + r];
    float *running_mean = params[3 + r], *running_var = params[4 + r], *y = params[6 + r];
    double *mean_out = params[7 + r], *invstd_out = params[8 + r];
    const int64_t n = shapes[0][0], c = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
    const double count = (double)(n * hw);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < c; k++) {
        /* Shifted by one sample of the channel, so that the variance is not the difference of two
           large sums when the mean is far from zero. */
        const double shift = x[k * hw];
        double sum = 0.0, squares = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const float *plane = x + (i * c + k) * hw;
#pragma omp simd reduction(+ : sum, squares)
            for (int64_t j = 0; j < hw; j++) {
                const double d = plane[j] - shift;
                sum += d;
                squares += d * d;
            }
        }
        const double mean = shift + sum / count, var = fmax(squares / count - (sum / count) * (sum / count), 0.0);
        const double invstd = 1.0 / sqrt(var + settings[0]), momentum = settings[1];
        mean_out[k] = mean, invstd_out[k] = invstd;
        running_mean[k] = (float)(running_mean[k] + momentum * (mean - running_mean[k]));
        running_var[k] = (float)(running_var[k] + momentum * (var * count / fmax(count - 1.0, 1.0) - running_var[k]));
        const float scale = (float)(gamma[k] * invstd), offset = (float)(beta[k] - mean * gamma[k] * invstd);
        for (int64_t i = 0; i < n; i++) {
            const int64_t at = (i * c + k) * hw;
            const float *in = x + at, *add = residual ? residual + at : NULL;
            float *out = y + at;
            if (add && (flags & RELU)) {
#pragma omp simd
                for (int64_t j = 0; j < hw; j++) {
                    const float v = in[j] * scale + offset + add[j];
                    out[j] = v > 0.0f ? v : 0.0f;
                }
            } else if (flags & RELU) {
#pragma omp simd
                for (int64_t j = 0; j < hw; j++) {
                    const float v = in[j] * scale + offset;
                    out[j] = v > 0.0f ? v : 0.0f;
                }
            } else {
#pragma omp simd
                for (int64_t j = 0; j < hw; j++) out[j] = in[j] * scale + offset;
            }
        }
    }
    return 0;
}

/* x, dy [, y when RELU], gamma, mean, invstd -> dx, dgamma, dbeta [, dresidual when RESIDUAL];
   with RELU, dy is first masked where y is 0. */
VECTOR_CLONES static int backward(int flags, void **params, int64_t **shapes, const char **dtypes) {
    if (strcmp(dtypes[0], "float32") != 0) return 1;
    const int u = (flags & RELU) != 0;
    const float *x = params[0], *dy = params[1], *y = u ? params[2] : NULL;
    const float *gamma = params[2 + u];
    const double *mean_in = params[3 + u], *invstd_in = params[4 + u];
    float *dx = params[5 + u], *dgamma = params[6 + u], *dbeta = params[7 + u];
    float *dresidual = (flags & RESIDUAL) ? params[8 + u] : NULL;
    const int64_t n = shapes[0][0], c = shapes[0][1], hw = shapes[0][2] * shapes[0][3];
    const double count = (double)(n * hw);
#pragma omp parallel for schedule(static)
    for (int64_t k = 0; k < c; k++) {
        const double mean = mean_in[k], invstd = invstd_in[k];
        double sum = 0.0, dot = 0.0;
        for (int64_t i = 0; i < n; i++) {
            const int64_t at = (i * c + k) * hw;
            const float *xs = x + at, *gs = dy + at;
            if (y) {
                /* The masked gradient is the residual's; without one, dx holds it until overwritten. */
                const float *ys = y + at;
                float *masked = (dresidual ? dresidual : dx) + at;
#pragma omp simd
                for (int64_t j = 0; j < hw; j++) masked[j] = ys[j] > 0.0f ? gs[j] : 0.0f;
                gs = masked;
            }
#pragma omp simd reduction(+ : sum, dot)
            for (int64_t j = 0; j < hw; j++) {
                sum += gs[j];
                dot += (double)gs[j] * (xs[j] - mean);
            }
        }
        dgamma[k] = (float)(dot * invstd), dbeta[k] = (float)sum;
        const double scale = gamma[k] * invstd, mean_dy = sum / count, slope = dot * invstd * invstd / count;
        const float *g = y ? (dresidual ? dresidual : dx) : dy;
        for (int64_t i = 0; i < n; i++) {
            const int64_t at = (i * c + k) * hw;
            const float *xs = x + at, *gs = g + at;
            float *out = dx + at;
#pragma omp simd
            for (int64_t j = 0; j < hw; j++) out[j] = (float)(scale * (gs[j] - mean_dy - (xs[j] - mean) * slope));
        }
    }
    return 0;
}

#define ENTRY(name, pass, flags)                                                                    \
    int name(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,          \
             void *stream, void *extra) {                                                           \
        (void)nparam, (void)ndims, (void)stream, (void)extra;                                       \
        return pass(flags, params, shapes, dtypes);                                                 \
    }

ENTRY(BatchNorm, forward, 0)
ENTRY(BatchNormReLU, forward, RELU)
ENTRY(BatchNormAddReLU, forward, RELU | RESIDUAL)
ENTRY(BatchNormGrad, backward, 0)
ENTRY(BatchNormReLUGrad, backward, RELU)
ENTRY(BatchNormAddReLUGrad, backward, RELU | RESIDUAL)
