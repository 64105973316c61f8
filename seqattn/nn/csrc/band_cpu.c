/* Exact sliding-window attention for narrow windows on the CPU (seqattn.nn.native_band loads it).
 *
 * The blocked kernel in seqattn/nn/local.py multiplies whole query blocks against whole key windows with
 * batched matrix products; for a window of a few dozen keys most of that work is padding and per-token
 * bookkeeping. These loops visit exactly the keys of each query's window, fused: scores, softmax and the
 * weighted sum in one pass forward (keeping the probabilities, N x window, when a backward follows); the
 * backward makes one pass over queries (score gradients, dq) and one over keys, each key gathering from the
 * queries that see it (dk, dv), so no two threads write the same row. Rows (batch x head pairs), cut into
 * pieces when there are fewer rows than threads, run on POSIX threads.
 *
 * Built by seqattn.nn.native_band with the system C compiler; no Python or torch headers are needed.
 */
#include <math.h>
#include <pthread.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#include <stdint.h>
#include <stdlib.h>

struct band_args {
    const void *q, *k, *v, *grad_out, *grad_lse;
    void *out, *lse, *dq, *dk, *dv;
    void *probs, *grad_scores;  /* (rows, n, left + right + 1): kept by the forward, used by the backward */
    const uint8_t *valid;
    int64_t rows, length, dim, vdim, left, right;
    /* 1: write out, dq, dk and dv with non-temporal stores (AVX2 float only). The caller sets it only when
     * each of them is 32-byte aligned, dim and vdim are multiples of 8, and the tensors are far larger than the
     * caches, so that nothing that is about to be read again is pushed out of them. */
    int64_t stream;
    double scale, self_bias, neg;
};

#define CAT_(a, b) a##_##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SUF)

#define T float
#define SUF f32
#define LANES 8
#if defined(__AVX2__) && defined(__FMA__)
#include "band_avx2.h"
#else
#include "band_generic.h"
#endif
#include "band_kernel.h"
#undef T
#undef SUF
#undef LANES

#define T double
#define SUF f64
#define LANES 4
#include "band_generic.h"
#include "band_kernel.h"
#undef T
#undef SUF
#undef LANES

enum pass { FORWARD, BACKWARD_QUERIES, BACKWARD_KEYS };

struct task {
    const struct band_args *args;
    enum pass pass;
    int is_double;
    int64_t first, last;   /* work items [first, last): item = row * chunks + chunk */
    int64_t chunks;        /* pieces each row's positions are cut into */
    int status;
};

static void *run_task(void *opaque) {
    struct task *task = opaque;
    const struct band_args *args = task->args;
    const int64_t width = args->left + args->right + 1;
    const size_t element = task->is_double ? sizeof(double) : sizeof(float);
    void *scratch = malloc(2 * (size_t)width * element);
    if (!scratch) {
        task->status = 1;
        return 0;
    }
    const int64_t per = (args->length + task->chunks - 1) / task->chunks;
    for (int64_t item = task->first; item < task->last; item++) {
        const int64_t row = item / task->chunks, first = item % task->chunks * per;
        const int64_t last = first + per < args->length ? first + per : args->length;
        if (first >= last) continue;
        switch (task->pass) {
        case FORWARD:
            if (task->is_double) forward_queries_f64(args, row, first, last, scratch);
            else forward_queries_f32(args, row, first, last, scratch);
            break;
        case BACKWARD_QUERIES:
            if (task->is_double) backward_queries_f64(args, row, first, last, scratch);
            else backward_queries_f32(args, row, first, last, scratch);
            break;
        case BACKWARD_KEYS:
            if (task->is_double) backward_keys_f64(args, row, first, last, scratch);
            else backward_keys_f32(args, row, first, last, scratch);
            break;
        }
    }
    free(scratch);
#if defined(__SSE2__)
    _mm_sfence();  /* non-temporal stores are weakly ordered: make them visible before the caller reads */
#endif
    task->status = 0;
    return 0;
}

/* One pass over every row, cut into enough pieces that each of up to `threads` threads (the caller's is
 * one) gets work even when there are fewer rows than threads; 0 on success. */
static int run_parallel(const struct band_args *args, enum pass pass, int is_double, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    const int64_t chunks = args->rows >= threads ? 1 : (threads + args->rows - 1) / args->rows;
    const int64_t items = args->rows * chunks;
    if (threads > items) threads = (int)(items > 0 ? items : 1);
    struct task tasks[256];
    pthread_t ids[256];
    int started[256] = {0};
    for (int t = 0; t < threads; t++)
        tasks[t] = (struct task){args, pass, is_double, items * t / threads, items * (t + 1) / threads, chunks, 1};
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], 0, run_task, &tasks[t]) == 0;
    for (int t = 1; t < threads; t++)
        if (!started[t]) run_task(&tasks[t]);  /* no thread available: do its share here */
    run_task(&tasks[0]);
    int status = tasks[0].status;
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(ids[t], 0);
        status |= tasks[t].status;
    }
    return status;
}

/* Output and log-sum-exp; the probabilities too when args->probs is set (a backward will follow). */
int band_forward(const struct band_args *args, int is_double, int threads) {
    return run_parallel(args, FORWARD, is_double, threads);
}

/* Gradients of q, k and v from the forward's probabilities; args->grad_scores is scratch of their shape. */
int band_backward(const struct band_args *args, int is_double, int threads) {
    return run_parallel(args, BACKWARD_QUERIES, is_double, threads) ||
           run_parallel(args, BACKWARD_KEYS, is_double, threads);
}

/* The version of this interface; the Python side refuses a library built from another one. */
int band_abi_version(void) { return 3; }
