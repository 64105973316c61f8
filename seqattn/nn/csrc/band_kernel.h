/* Exact sliding-window attention on the CPU, one element type per inclusion.
 *
 * band_cpu.c includes this file once for float and once for double, after the primitives (dots,
 * weighted_rows, scale_mask_max, exp_sum) of the same type, with
 *   T      the element type,
 *   SUF    the suffix of every function name (f32, f64).
 *
 * Layout: every tensor is contiguous; "rows" are the B*H (batch, head) pairs; q and k are (rows, n, d),
 * v, out and their gradients (rows, n, dv); valid (rows, n) is 1 for a real key; lse (rows, n).
 * Query i of a row sees key j iff i - left <= j <= i + right, 0 <= j < n and valid[j]; its score is
 * scale * (q_i . k_j), plus self_bias when j == i. A query that sees no key outputs zeros and gets the
 * log-sum-exp `neg` (a large negative finite value, as the blocked kernel does).
 */

/* Scores of query i against its window [lo, hi] turned into probabilities' numerators in place
 * (exp(s - max), masked keys 0); returns their sum and writes the row maximum, or returns 0 when the query
 * sees no key. */
static inline T FN(window_probs)(const struct band_args *restrict args, const T *restrict qi, const T *restrict k,
                                 const uint8_t *restrict valid, int64_t i, int64_t lo, int64_t hi,
                                 T *restrict p, T *restrict row_max) {
    const int64_t d = args->dim, count = hi - lo + 1;
    const T scale = (T)args->scale;
    FN(dots)(qi, k + lo * d, count, d, p);
    const T top = FN(scale_mask_max)(p, valid + lo, count, scale, i - lo, (T)args->self_bias);
    if (top == -(T)INFINITY) return 0;
    *row_max = top;
    return FN(exp_sum)(p, count, top);
}

/* Bounds of query i's window, clipped to the sequence. */
static inline void FN(window_bounds)(const struct band_args *restrict args, int64_t i, int64_t *lo, int64_t *hi) {
    *lo = i - args->left > 0 ? i - args->left : 0;
    *hi = i + args->right < args->length - 1 ? i + args->right : args->length - 1;
}

/* Forward of queries [first, last) of one row. With args->probs, each query's probabilities are kept as a
 * row of `width` = left + right + 1 columns, column c holding key i - left + c (0 outside the sequence and
 * for masked keys), for the backward. */
static void FN(forward_queries)(const struct band_args *restrict args, int64_t row, int64_t first, int64_t last,
                                T *restrict p) {
    const int64_t n = args->length, d = args->dim, dv = args->vdim, width = args->left + args->right + 1;
    const T *q = (const T *)args->q + row * n * d, *k = (const T *)args->k + row * n * d;
    const T *v = (const T *)args->v + row * n * dv;
    const uint8_t *valid = args->valid + row * n;
    T *out = (T *)args->out + row * n * dv, *lse = (T *)args->lse + row * n;
    T *kept = args->probs ? (T *)args->probs + row * n * width : 0;
    for (int64_t i = first; i < last; i++) {
        int64_t lo, hi;
        FN(window_bounds)(args, i, &lo, &hi);
        T top = 0;
        const T sum = FN(window_probs)(args, q + i * d, k, valid, i, lo, hi, p, &top);
        if (sum == 0) {
            for (int64_t x = 0; x < dv; x++) out[i * dv + x] = 0;
            lse[i] = (T)args->neg;
            if (kept) for (int64_t c = 0; c < width; c++) kept[i * width + c] = 0;
            continue;
        }
        const T inv = (T)1 / sum;
        FN(weighted_rows)(p, v + lo * dv, hi - lo + 1, dv, inv, out + i * dv, (int)args->stream);
        lse[i] = top + (T)log(sum);
        if (kept) {  /* columns of keys outside the sequence are 0 */
            const int64_t offset = lo - (i - args->left), count = hi - lo + 1;
            T *row_probs = kept + i * width;
            for (int64_t c = 0; c < offset; c++) row_probs[c] = 0;
            for (int64_t c = 0; c < count; c++) row_probs[offset + c] = p[c] * inv;
            for (int64_t c = offset + count; c < width; c++) row_probs[c] = 0;
        }
    }
}

/* Backward, first pass, queries [first, last) of one row: the score gradients
 * dS_ij = P_ij (dO_i . v_j - dO_i . O_i + d loss / d lse_i), kept in args->grad_scores in the layout of
 * args->probs, and dq_i = scale * sum_j dS_ij k_j. Since O_i = sum_j P_ij v_j, dO_i . O_i is
 * sum_j P_ij (dO_i . v_j), a sum over the dot products the pass computes anyway: the output is not read
 * (nor kept by the forward), which saves a tensor's worth of memory traffic. */
static void FN(backward_queries)(const struct band_args *restrict args, int64_t row, int64_t first, int64_t last,
                                 T *restrict dp) {
    const int64_t n = args->length, d = args->dim, dv = args->vdim, width = args->left + args->right + 1;
    const T *k = (const T *)args->k + row * n * d, *v = (const T *)args->v + row * n * dv;
    const T *go = (const T *)args->grad_out + row * n * dv;
    const T *glse = args->grad_lse ? (const T *)args->grad_lse + row * n : 0;
    const T *probs = (const T *)args->probs + row * n * width;
    T *grad_scores = (T *)args->grad_scores + row * n * width, *dq = (T *)args->dq + row * n * d;
    for (int64_t i = first; i < last; i++) {
        int64_t lo, hi;
        FN(window_bounds)(args, i, &lo, &hi);
        const int64_t count = hi - lo + 1, offset = lo - (i - args->left);
        const T *p = probs + i * width + offset;
        T *ds = grad_scores + i * width;
        for (int64_t c = 0; c < offset; c++) ds[c] = 0;
        for (int64_t c = offset + count; c < width; c++) ds[c] = 0;
        ds += offset;
        FN(dots)(go + i * dv, v + lo * dv, count, dv, dp);
        T row_term = glse ? -glse[i] : (T)0;  /* dO_i . O_i - d loss / d lse_i */
        for (int64_t c = 0; c < count; c++) row_term += p[c] * dp[c];
        for (int64_t c = 0; c < count; c++) ds[c] = p[c] * (dp[c] - row_term);
        FN(weighted_rows)(ds, k + lo * d, count, d, (T)args->scale, dq + i * d, (int)args->stream);
    }
}

/* Backward, second pass, keys [first, last) of one row: each key gathers from the queries that see it,
 * dk_j = scale * sum_i dS_ij q_i and dv_j = sum_i P_ij dO_i, so no two tasks write the same key. */
static void FN(backward_keys)(const struct band_args *restrict args, int64_t row, int64_t first, int64_t last,
                              T *restrict scratch) {
    const int64_t n = args->length, d = args->dim, dv = args->vdim, width = args->left + args->right + 1;
    const T *q = (const T *)args->q + row * n * d, *go = (const T *)args->grad_out + row * n * dv;
    const T *probs = (const T *)args->probs + row * n * width;
    const T *grad_scores = (const T *)args->grad_scores + row * n * width;
    T *dk = (T *)args->dk + row * n * d, *dval = (T *)args->dv + row * n * dv;
    T *p = scratch, *ds = scratch + width;
    for (int64_t j = first; j < last; j++) {
        /* queries i with i - left <= j <= i + right */
        const int64_t lo = j - args->right > 0 ? j - args->right : 0;
        const int64_t hi = j + args->left < n - 1 ? j + args->left : n - 1;
        for (int64_t i = lo; i <= hi; i++) {
            const int64_t column = j - i + args->left;
            p[i - lo] = probs[i * width + column];
            ds[i - lo] = grad_scores[i * width + column];
        }
        FN(weighted_rows)(ds, q + lo * d, hi - lo + 1, d, (T)args->scale, dk + j * d, (int)args->stream);
        FN(weighted_rows)(p, go + lo * dv, hi - lo + 1, dv, (T)1, dval + j * dv, (int)args->stream);
    }
}
