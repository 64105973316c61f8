/* AVX2 + FMA primitives for float (the training type), replacing band_generic.h's for SUF f32.
 * Eight float lanes per register; a row of d = 64 is eight registers. */
#include <immintrin.h>

/* The eight sums of lanes of a0..a7, in order, in one register. */
static inline __m256 sum_lanes8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6,
                                __m256 a7) {
    const __m256 t0 = _mm256_hadd_ps(a0, a1), t1 = _mm256_hadd_ps(a2, a3);
    const __m256 t2 = _mm256_hadd_ps(a4, a5), t3 = _mm256_hadd_ps(a6, a7);
    const __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);  /* per 128-bit half: 4 partial sums */
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20), _mm256_permute2f128_ps(u0, u1, 0x31));
}

static inline float sum_lanes(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_hadd_ps(s, s);
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(s);
}

static inline void dots_f32(const float *restrict a, const float *restrict rows, int64_t count, int64_t d,
                            float *restrict out) {
    const int64_t full = d & ~(int64_t)7;
    int64_t j = 0;
    /* eight rows at a time: one load of `a` feeds eight independent multiply-add chains */
    for (; j + 8 <= count; j += 8) {
        const float *restrict b = rows + j * d;
        __m256 acc[8];
        for (int r = 0; r < 8; r++) acc[r] = _mm256_setzero_ps();
        for (int64_t x = 0; x < full; x += 8) {
            const __m256 ax = _mm256_loadu_ps(a + x);
            for (int r = 0; r < 8; r++) acc[r] = _mm256_fmadd_ps(ax, _mm256_loadu_ps(b + r * d + x), acc[r]);
        }
        _mm256_storeu_ps(out + j, sum_lanes8(acc[0], acc[1], acc[2], acc[3], acc[4], acc[5], acc[6], acc[7]));
        for (int64_t x = full; x < d; x++)
            for (int r = 0; r < 8; r++) out[j + r] += a[x] * b[r * d + x];
    }
    for (; j < count; j++) {
        const float *restrict b = rows + j * d;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        int64_t x = 0;
        for (; x + 16 <= full; x += 16) {
            acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + x), _mm256_loadu_ps(b + x), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + x + 8), _mm256_loadu_ps(b + x + 8), acc1);
        }
        for (; x < full; x += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + x), _mm256_loadu_ps(b + x), acc0);
        float sum = sum_lanes(_mm256_add_ps(acc0, acc1));
        for (; x < d; x++) sum += a[x] * b[x];
        out[j] = sum;
    }
}

/* out[0 : 8 * CHUNKS] = factor * sum_j weight[j] * rows[j][0 : 8 * CHUNKS], with CHUNKS accumulators held in
 * registers across all rows (one function per CHUNKS, so the compiler unrolls it completely). With `stream`
 * (out 32-byte aligned) the results go to memory with non-temporal stores: a tensor far larger than the caches
 * is then written without first being read into them, which is a third of a bandwidth-bound pass's traffic. */
#define WEIGHTED_TILE(CHUNKS)                                                                                 \
    static inline void weighted_tile##CHUNKS(const float *restrict weight, const float *restrict rows,        \
                                             int64_t count, int64_t d, float factor, float *restrict out,     \
                                             int stream) {                                                    \
        __m256 acc[CHUNKS];                                                                                   \
        for (int t = 0; t < CHUNKS; t++) acc[t] = _mm256_setzero_ps();                                        \
        for (int64_t j = 0; j < count; j++) {                                                                 \
            const __m256 w = _mm256_set1_ps(weight[j]);                                                       \
            for (int t = 0; t < CHUNKS; t++)                                                                  \
                acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(rows + j * d + 8 * t), acc[t]);                   \
        }                                                                                                     \
        const __m256 f = _mm256_set1_ps(factor);                                                              \
        if (stream)                                                                                           \
            for (int t = 0; t < CHUNKS; t++) _mm256_stream_ps(out + 8 * t, _mm256_mul_ps(f, acc[t]));         \
        else                                                                                                  \
            for (int t = 0; t < CHUNKS; t++) _mm256_storeu_ps(out + 8 * t, _mm256_mul_ps(f, acc[t]));         \
    }
WEIGHTED_TILE(1)
WEIGHTED_TILE(2)
WEIGHTED_TILE(3)
WEIGHTED_TILE(4)
WEIGHTED_TILE(5)
WEIGHTED_TILE(6)
WEIGHTED_TILE(7)
WEIGHTED_TILE(8)
#undef WEIGHTED_TILE

/* `stream`: the caller guarantees out is 32-byte aligned and d a multiple of 8 (see band_args.stream). */
static inline void weighted_rows_f32(const float *restrict weight, const float *restrict rows, int64_t count,
                                     int64_t d, float factor, float *restrict out, int stream) {
    int64_t x = 0;
    for (; x + 64 <= d; x += 64) weighted_tile8(weight, rows + x, count, d, factor, out + x, stream);
    switch ((d - x) / 8) {  /* the rest of the whole registers in one more pass */
    case 7: weighted_tile7(weight, rows + x, count, d, factor, out + x, stream); break;
    case 6: weighted_tile6(weight, rows + x, count, d, factor, out + x, stream); break;
    case 5: weighted_tile5(weight, rows + x, count, d, factor, out + x, stream); break;
    case 4: weighted_tile4(weight, rows + x, count, d, factor, out + x, stream); break;
    case 3: weighted_tile3(weight, rows + x, count, d, factor, out + x, stream); break;
    case 2: weighted_tile2(weight, rows + x, count, d, factor, out + x, stream); break;
    case 1: weighted_tile1(weight, rows + x, count, d, factor, out + x, stream); break;
    default: break;
    }
    x += (d - x) / 8 * 8;
    for (; x < d; x++) {
        float acc = 0;
        for (int64_t j = 0; j < count; j++) acc += weight[j] * rows[j * d + x];
        out[x] = factor * acc;
    }
}

static inline float scale_mask_max_f32(float *restrict p, const uint8_t *restrict valid, int64_t count,
                                       float scale, int64_t self, float bias) {
    const __m256 factor = _mm256_set1_ps(scale), minus_inf = _mm256_set1_ps(-INFINITY);
    __m256 nan = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= count; c += 8) {
        /* eight validity bytes to eight all-ones / all-zeros lanes */
        const __m256i flags = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(valid + c)));
        const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(flags, _mm256_setzero_si256()));
        const __m256 s = _mm256_blendv_ps(minus_inf, _mm256_mul_ps(factor, _mm256_loadu_ps(p + c)), keep);
        _mm256_storeu_ps(p + c, s);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
    }
    int any_nan = _mm256_movemask_ps(nan) != 0;
    for (; c < count; c++) {
        p[c] = valid[c] ? scale * p[c] : -INFINITY;
        any_nan |= p[c] != p[c];
    }
    if (self >= 0 && self < count && valid[self]) p[self] += bias;
    if (any_nan) return NAN;  /* a NaN score makes the row NaN, as in the blocked kernel */
    __m256 top = minus_inf;
    for (c = 0; c + 8 <= count; c += 8) top = _mm256_max_ps(top, _mm256_loadu_ps(p + c));
    float lanes[8], best = -INFINITY;
    _mm256_storeu_ps(lanes, top);
    for (int l = 0; l < 8; l++) best = lanes[l] > best ? lanes[l] : best;
    for (; c < count; c++) best = p[c] > best ? p[c] : best;
    return best;
}

/* exp(x) for x <= 0, eight at a time: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its Taylor polynomial of
 * degree 6 (relative error below 2e-7), 2^n put into the exponent bits; x below -87 (and -infinity) gives 0. */
static inline __m256 exp_nonpositive(__m256 x) {
    const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_set1_ps(-87.0f), x);  /* NaN stays NaN (max returns its second operand) */
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* r = x - n ln2, with ln2 split in two so that n * ln2_hi is exact */
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187e-06f), r);
    __m256 poly = _mm256_set1_ps(1.0f / 720);
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 120));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 24));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f / 6));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(0.5f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
    poly = _mm256_fmadd_ps(poly, r, _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(underflow, _mm256_mul_ps(poly, _mm256_castsi256_ps(bits)));
}

static inline float exp_sum_f32(float *restrict p, int64_t count, float top) {
    const __m256 shift = _mm256_set1_ps(top);
    __m256 acc = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + 8 <= count; c += 8) {
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(p + c), shift));
        _mm256_storeu_ps(p + c, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = sum_lanes(acc);
    if (c < count) {  /* the tail through a padded register */
        float tail[8];
        int64_t left = count - c;
        for (int t = 0; t < 8; t++) tail[t] = t < left ? p[c + t] : -INFINITY;
        const __m256 e = exp_nonpositive(_mm256_sub_ps(_mm256_loadu_ps(tail), shift));
        _mm256_storeu_ps(tail, e);
        for (int t = 0; t < left; t++) {
            p[c + t] = tail[t];
            sum += tail[t];
        }
    }
    return sum;
}
