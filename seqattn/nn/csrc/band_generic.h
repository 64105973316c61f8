/* Portable primitives of the band kernel for element type T (any compiler, any CPU; band_avx2.h replaces
 * them for float where AVX2 and FMA are available). Included by band_cpu.c with T, SUF and LANES defined.
 * The loops keep independent partial sums so that a vectorising compiler can keep them in registers. */

/* out[j] = a . rows[j] for `count` consecutive rows of length d starting at `rows`. */
static inline void FN(dots)(const T *restrict a, const T *restrict rows, int64_t count, int64_t d,
                            T *restrict out) {
    for (int64_t j = 0; j < count; j++) {
        const T *restrict b = rows + j * d;
        T acc[LANES];
        for (int l = 0; l < LANES; l++) acc[l] = 0;
        int64_t x = 0;
        for (; x + LANES <= d; x += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += a[x + l] * b[x + l];
        T sum = 0;
        for (int l = 0; l < LANES; l++) sum += acc[l];
        for (; x < d; x++) sum += a[x] * b[x];
        out[j] = sum;
    }
}

/* out = factor * sum_j weight[j] * rows[j] over `count` consecutive rows of length d. `stream` (non-temporal
 * stores, band_avx2.h) has no portable form: plain stores here. */
static inline void FN(weighted_rows)(const T *restrict weight, const T *restrict rows, int64_t count, int64_t d,
                                     T factor, T *restrict out, int stream) {
    (void)stream;
    enum { TILE = 8 * LANES };
    int64_t x = 0;
    for (; x + TILE <= d; x += TILE) {
        T acc[TILE];
        for (int t = 0; t < TILE; t++) acc[t] = 0;
        for (int64_t j = 0; j < count; j++) {
            const T w = weight[j];
            const T *restrict row = rows + j * d + x;
            for (int t = 0; t < TILE; t++) acc[t] += w * row[t];
        }
        for (int t = 0; t < TILE; t++) out[x + t] = factor * acc[t];
    }
    for (; x < d; x++) {
        T acc = 0;
        for (int64_t j = 0; j < count; j++) acc += weight[j] * rows[j * d + x];
        out[x] = factor * acc;
    }
}

/* Raw dot products to scores in place: p[c] = scale * p[c] (+ bias for c == self), -infinity where the key
 * is not valid; returns the largest score (-infinity when no key is valid, NaN when a score is NaN). */
static inline T FN(scale_mask_max)(T *restrict p, const uint8_t *restrict valid, int64_t count, T scale,
                                   int64_t self, T bias) {
    T top = -(T)INFINITY;
    for (int64_t c = 0; c < count; c++) {
        const T s = valid[c] ? scale * p[c] + (c == self ? bias : (T)0) : -(T)INFINITY;
        p[c] = s;
        top = (s > top || s != s) ? s : top;
    }
    return top;
}

/* p[c] = exp(p[c] - top) (0 for p[c] = -infinity, a masked key); returns the sum. */
static inline T FN(exp_sum)(T *restrict p, int64_t count, T top) {
    T sum = 0;
    for (int64_t c = 0; c < count; c++) {
        p[c] = (T)exp((double)(p[c] - top));
        sum += p[c];
    }
    return sum;
}
