/*
 * The short-row block kernel of short_rows.h for one type T and one ISA
 * level, compiled once per (type, level) by kernels_template.h.
 */

#if CE_GNU
/*
 * Square tiles for moving a block of rows between row-major memory and the
 * [class][row] layout of the block: one 32-byte vector per row (CE_VL
 * elements), transposed in registers.  Written with GCC vector extensions so
 * that every clone gets its own instructions (two SSE halves in the baseline
 * clone, AVX shuffles in the x86-64-v3 and -v4 ones).  Rows need no
 * alignment: the ce_uvec types load and store a vector at any element address
 * (memcpy would do the same, but GCC 12 copies it in 16-byte pieces, and a
 * 32-byte load of what two 16-byte stores just wrote stalls).  Half tiles,
 * for the classes a whole tile would overshoot: CE_VL rows of CE_VL/2
 * elements, loaded as CE_VL/2 vectors [row kk | row kk + CE_VL/2].  The
 * vector types are short_rows.h's.
 */

/* The first stages of a transpose, within each 128-bit lane, from the n
   vectors r (n = CE_VL or CE_VL / 2) to out (which may be r): unpacked element
   by element in pairs, then (floats) two elements at a time in pairs of
   pairs.  On CE_VL / 2 vectors [row kk | row kk + CE_VL/2] it is the whole
   transpose of a half tile, and the same turns its columns back into such
   row pairs. */
CE_INLINE void CE_FNL(ce_lane_transpose)(const CE_FN(ce_vec) *r, CE_FN(ce_vec) *out, int n)
{
    CE_FN(ce_vec) t[CE_VL];
    for (int i = 0; i < n; i += 2) {
        t[i] = CE_FN(CE_SHUFFLE)(r[i], r[i + 1], CE_LO1);
        t[i + 1] = CE_FN(CE_SHUFFLE)(r[i], r[i + 1], CE_HI1);
    }
#if CE_LANE > 2
    for (int i = 0; i < n; i += 4)
        for (int h = 0; h < 2; h++) {
            out[i + 2 * h] = CE_FN(CE_SHUFFLE)(t[i + h], t[i + h + 2], CE_LO2);
            out[i + 2 * h + 1] = CE_FN(CE_SHUFFLE)(t[i + h], t[i + h + 2], CE_HI2);
        }
#else
    for (int i = 0; i < n; i++) out[i] = t[i];
#endif
}

/* A whole tile's transpose: within the lanes, then 128-bit halves. */
CE_INLINE void CE_FNL(ce_transpose)(CE_FN(ce_vec) r[CE_VL])
{
    CE_FN(ce_vec) u[CE_VL];
    CE_FNL(ce_lane_transpose)(r, u, CE_VL);
    for (int i = 0; i < CE_VL / 2; i++) {
        r[i] = CE_FN(CE_SHUFFLE)(u[i], u[i + CE_VL / 2], CE_HALF_LO);
        r[i + CE_VL / 2] = CE_FN(CE_SHUFFLE)(u[i], u[i + CE_VL / 2], CE_HALF_HI);
    }
}

/*
 * Moving CE_VL rows (rows[0..CE_VL-1], classes contiguous) into and out of
 * the [class][row] buffer, CE_VL columns from class jt on (tile) or CE_VL/2
 * (half).  col points at the buffer's (class jt, row 0 of these rows); each
 * class's CE_VL rows are contiguous there, classes CE_ROWS apart.  On the way
 * out every row kk is multiplied by a[kk] (the same products, per column of
 * rows).
 */
CE_INLINE void CE_FNL(ce_tile_in)(const T *const *rows, ptrdiff_t jt, T *col)
{
    CE_FN(ce_vec) r[CE_VL];
    for (int kk = 0; kk < CE_VL; kk++) r[kk] = *(const CE_FN(ce_uvec) *)(rows[kk] + jt);
    CE_FNL(ce_transpose)(r);
    for (int kk = 0; kk < CE_VL; kk++) *(CE_FN(ce_vec) *)(col + kk * CE_ROWS) = r[kk];
}

CE_INLINE void CE_FNL(ce_half_in)(const T *const *rows, ptrdiff_t jt, T *col)
{
    CE_FN(ce_vec) r[CE_VL / 2];
    for (int kk = 0; kk < CE_VL / 2; kk++)
        r[kk] = CE_FN(CE_JOIN)(*(const CE_FN(ce_uhalf) *)(rows[kk] + jt),
                              *(const CE_FN(ce_uhalf) *)(rows[kk + CE_VL / 2] + jt));
    CE_FNL(ce_lane_transpose)(r, r, CE_VL / 2);
    for (int kk = 0; kk < CE_VL / 2; kk++) *(CE_FN(ce_vec) *)(col + kk * CE_ROWS) = r[kk];
}

CE_INLINE void CE_FNL(ce_tile_out)(const T *col, const T *a, T *const *rows,
                                  ptrdiff_t jt)
{
    CE_FN(ce_vec) r[CE_VL], av = *(const CE_FN(ce_vec) *)a;
    for (int kk = 0; kk < CE_VL; kk++) r[kk] = *(const CE_FN(ce_vec) *)(col + kk * CE_ROWS) * av;
    CE_FNL(ce_transpose)(r);
    for (int kk = 0; kk < CE_VL; kk++) *(CE_FN(ce_uvec) *)(rows[kk] + jt) = r[kk];
}

CE_INLINE void CE_FNL(ce_half_out)(const T *col, const T *a, T *const *rows,
                                  ptrdiff_t jt)
{
    CE_FN(ce_vec) r[CE_VL / 2], av = *(const CE_FN(ce_vec) *)a;
    for (int kk = 0; kk < CE_VL / 2; kk++) r[kk] = *(const CE_FN(ce_vec) *)(col + kk * CE_ROWS) * av;
    CE_FNL(ce_lane_transpose)(r, r, CE_VL / 2);
    for (int kk = 0; kk < CE_VL / 2; kk++) {
        *(CE_FN(ce_uhalf) *)(rows[kk] + jt) = CE_FN(CE_LOW)(r[kk]);
        *(CE_FN(ce_uhalf) *)(rows[kk + CE_VL / 2] + jt) = CE_FN(CE_HIGH)(r[kk]);
    }
}
#endif

/* The addresses of rows 0..n-1 (two loops, so that either vectorises). */
CE_INLINE void CE_FNL(ce_row_list)(const ce_rows *rows, ptrdiff_t n, T **out)
{
    void *const *at = rows->at;
    char *base = rows->base;
    ptrdiff_t step = rows->step;
    if (at != NULL)
        for (ptrdiff_t k = 0; k < n; k++) out[k] = (T *)at[k];
    else
        for (ptrdiff_t k = 0; k < n; k++) out[k] = (T *)(base + k * step);
}

/* Rows 0..n-1 of the [class][row] block into rows (class stride gc), each
   row k times a[k]: by register tiles where the classes are contiguous
   (tiles' layout from ce_tiles), else element by element. */
CE_INLINE void CE_FNL(ce_block_out)(const T *buf, const T *a, T *const *rows, ptrdiff_t gc,
                                   ptrdiff_t n, ptrdiff_t m, int n_tiles,
                                   const ptrdiff_t *start, const int *half)
{
    ptrdiff_t k = 0, j;
#if CE_GNU
    if (gc == 1 && n_tiles > 0)
        for (; k + CE_VL <= n; k += CE_VL)
            for (int i = 0; i < n_tiles; i++) {
                if (half[i])
                    CE_FNL(ce_half_out)(buf + start[i] * CE_ROWS + k, a + k, rows + k, start[i]);
                else
                    CE_FNL(ce_tile_out)(buf + start[i] * CE_ROWS + k, a + k, rows + k, start[i]);
            }
#else
    (void)n_tiles; (void)start; (void)half;
#endif
    for (; k < n; k++)
        CE_NO_VECTORIZE
        for (j = 0; j < m; j++) rows[k][j * gc] = buf[j * CE_ROWS + k] * a[k];
}

/*
 * Short rows, many at a time: softmax cross-entropy with hard targets for up
 * to CE_ROWS rows of m <= CE_SHORT_MAX classes.  The rows are transposed into
 * a [class][row] buffer so that max, exp, sum, log and scaling all run as SIMD
 * over rows; a 10-class row then costs no per-row scalar chains.  Rows with
 * contiguous classes (at least half a vector's worth of them) move in and out
 * of the buffer by register tiles, whole or half (ce_tiles); a last tile
 * overlaps the one before it rather than reading past the row, so no masked
 * access is needed.
 *
 *   z           where the rows' logits start (ce_rows); classes at stride zc
 *   target, ts  row k's target at byte offset k * ts from target; a target
 *               equal to `ignore` (or, defensively, outside 0..m-1) ignores
 *               the row
 *   weight[k]   row k's weight (class weight x sample weight), or NULL for 1
 *   g           where the rows' gradients go (stride gc), or g == NULL
 *   h           with g: where the diagonals of the rows' Hessians go (stride
 *               hc), gscale * w p (1 - p) with 1 - p as (s - e) / s; or NULL
 *   gscale      multiplies every gradient (upstream gradient / denominator)
 *   loss[k]     receives row k's weighted loss (0 for ignored rows), or
 *               loss == NULL
 *   lse[k]      receives row k's log-sum-exp (ce_loss_lse; 0 for ignored
 *               rows), or lse == NULL
 *   buf         the [class][row] block: m * CE_ROWS elements or more,
 *               32-byte aligned, the caller's (too large for a thread's stack)
 *
 * Returns the sum of the n losses (in a fixed order: ce_sum64).
 * A row of weight 0 contributes 0 even where its target logit is -inf.
 */
static CE_TARGET double CE_FNL(ce_short_xent)(
    const ce_rows *z, ptrdiff_t zc, const ptrdiff_t *target, ptrdiff_t ts,
    ptrdiff_t ignore, const double *weight, ptrdiff_t n, ptrdiff_t m,
    const ce_rows *g, ptrdiff_t gc, const ce_rows *h, ptrdiff_t hc, double gscale,
    double *loss, double *lse, T *buf)
{
    buf = CE_ASSUME_ALIGNED(buf, 32);
    T mx[CE_ROWS], mn[CE_ROWS], a[CE_ROWS] CE_ALIGNED(32);
    double s[CE_ROWS], lg[CE_ROWS];
    T *zrows[CE_ROWS];            /* the logits: read only */
    T *grow_list[CE_ROWS], *const *grows = g != NULL ? grow_list : NULL;
    ptrdiff_t t[CE_ROWS], j, k;
    /* Row addresses, and each target as its class or -1. */
    CE_FNL(ce_row_list)(z, n, zrows);
    if (g != NULL) CE_FNL(ce_row_list)(g, n, grow_list);
    CE_NO_VECTORIZE
    for (k = 0; k < n; k++)
        t[k] = ce_class_or_ignored(
            *(const ptrdiff_t *)((const char *)target + k * ts), ignore, m);
    /* The gradient rows are written last: start fetching their lines now
       (rows shorter than a line share lines, and fetching each costs more
       than it saves). */
    if (grows != NULL && m > 0 && ((m - 1) * gc + 1) * (ptrdiff_t)sizeof(T) >= 64)
        for (k = 0; k < n; k++) {
            CE_PREFETCH(grows[k], 1);
            CE_PREFETCH(grows[k] + (m - 1) * gc, 1);
        }
    k = 0;
    ptrdiff_t start[CE_SHORT_MAX / 2 + 2];
    int half[CE_SHORT_MAX / 2 + 2], n_tiles = 0;
#if CE_GNU
    const T *const *zin = (const T *const *)zrows;
    int i;
    if (m >= CE_VL / 2) n_tiles = ce_tiles(m, CE_VL, start, half);
    if (zc == 1 && n_tiles > 0)
        for (; k + CE_VL <= n; k += CE_VL)
            for (i = 0; i < n_tiles; i++) {
                if (half[i])
                    CE_FNL(ce_half_in)(zin + k, start[i], buf + start[i] * CE_ROWS + k);
                else
                    CE_FNL(ce_tile_in)(zin + k, start[i], buf + start[i] * CE_ROWS + k);
            }
#endif
    for (; k < n; k++) {
        const T *zr = zrows[k];
        CE_NO_VECTORIZE
        for (j = 0; j < m; j++) buf[j * CE_ROWS + k] = zr[j * zc];
    }
    for (j = 0; j < m; j++)
        for (k = n; k < CE_ROWS; k++) buf[j * CE_ROWS + k] = 0;
    /* The maxima, then the minima: both at once would hold more
       accumulators than AVX2 has registers. */
    for (k = 0; k < CE_ROWS; k++) { mx[k] = -CE_INF; mn[k] = CE_INF; }
    for (j = 0; j < m; j++) {
        const T *col = buf + j * CE_ROWS;
        for (k = 0; k < CE_ROWS; k++) mx[k] = col[k] > mx[k] ? col[k] : mx[k];
    }
    for (j = 0; j < m; j++) {
        const T *col = buf + j * CE_ROWS;
        for (k = 0; k < CE_ROWS; k++) mn[k] = col[k] < mn[k] ? col[k] : mn[k];
    }
    T least[CE_VL], lo;             /* the least exp argument, in CE_VL lanes */
    for (k = 0; k < CE_VL; k++) least[k] = CE_INF;
    for (j = 0; j < CE_ROWS; j += CE_VL) {
        CE_SIMD
        for (k = 0; k < CE_VL; k++) {
            T d = mn[j + k] - mx[j + k];
            least[k] = d < least[k] ? d : least[k];
        }
    }
    lo = least[0];
    for (k = 1; k < CE_VL; k++) lo = least[k] < lo ? least[k] : lo;
    for (j = 0; j < m; j++) {
        T *col = buf + j * CE_ROWS;
        if (lo >= CE_NORMAL)
            for (k = 0; k < CE_ROWS; k++) col[k] = CE_FN(ce_exp_normal)(col[k] - mx[k]);
        else
            for (k = 0; k < CE_ROWS; k++) col[k] = CE_FN(ce_exp_nonpos)(col[k] - mx[k]);
    }
    for (k = 0; k < CE_ROWS; k++) s[k] = m > 0 ? (double)buf[k] : 0.0;
    for (j = 1; j < m; j++)
        for (k = 0; k < CE_ROWS; k++) s[k] += (double)buf[j * CE_ROWS + k];
    /* Per-row terms as arrays over all CE_ROWS rows (the padding rows past
       n have weight 0 and are never written), so that the loss and the
       gradient factors are SIMD over rows too. */
    double w[CE_ROWS], wl[CE_ROWS], zt[CE_ROWS], et[CE_ROWS], lossv[CE_ROWS];
    int on[CE_ROWS];                  /* the row counts: not ignored, not padding */
    if (weight != NULL)
        for (k = 0; k < n; k++) w[k] = weight[k];
    else
        for (k = 0; k < n; k++) w[k] = 1.0;
    /* The gathers read class 0 for an ignored row (any class would do: the
       selects below drop it), so that the loop has no branch. */
    CE_NO_VECTORIZE
    for (k = 0; k < n; k++) {
        ptrdiff_t c = t[k] < 0 ? 0 : t[k];
        zt[k] = m > 0 ? (double)zrows[k][c * zc] : 0.0;
        et[k] = m > 0 ? (double)buf[c * CE_ROWS + k] : 0.0;
    }
    for (k = 0; k < n; k++) {
        on[k] = t[k] >= 0;
        wl[k] = on[k] ? w[k] : 0.0;
        zt[k] = on[k] ? zt[k] : 0.0;
        et[k] = on[k] ? et[k] : 0.0;
    }
    for (; k < CE_ROWS; k++) { w[k] = wl[k] = zt[k] = et[k] = 0.0; on[k] = 0; }
    int odd = 0;                          /* a sum that is not a normal number */
    for (k = 0; k < CE_ROWS; k++) {
        lg[k] = ce_log_normal(s[k]);
        odd |= !ce_normal_double(s[k]);
    }
    if (odd)
        for (k = 0; k < CE_ROWS; k++)
            if (!ce_normal_double(s[k]))
                lg[k] = log(s[k]);            /* NaN, inf: libm's answer */
    for (k = 0; k < CE_ROWS; k++)
        lossv[k] = on[k] ? ce_target_loss(wl[k], (double)mx[k], zt[k], lg[k]) : 0.0;
    double total = ce_sum64(lossv);
    if (loss != NULL)
        for (k = 0; k < n; k++) loss[k] = lossv[k];
    if (lse != NULL)
        for (k = 0; k < n; k++) lse[k] = on[k] ? ce_loss_lse((double)mx[k], lg[k]) : 0.0;
    if (grows == NULL) return total;
    /* Gradient: p = e / s scaled by gscale * w (the row's weight is its
       target's), then the target's entry (ce_target_grad). */
    double gt[CE_ROWS], f[CE_ROWS], gw[CE_ROWS];
    int overflow = 0;
    for (k = 0; k < CE_ROWS; k++) {
        double inv = 1.0 / s[k];
        gw[k] = gscale * w[k];
        f[k] = gw[k] * inv;
        a[k] = (T)f[k];
        gt[k] = ce_target_grad(gw[k], 1.0, et[k] * inv, 1.0, 0.0);
        overflow |= (a[k] == CE_INF || a[k] == -CE_INF)
                    && !(f[k] == INFINITY || f[k] == -INFINITY);
    }
    if (overflow) {            /* a factor overflows T; the products may not */
        for (k = 0; k < n; k++)
            CE_NO_VECTORIZE
            for (j = 0; j < m; j++)
                grows[k][j * gc] = (T)(buf[j * CE_ROWS + k] * f[k]);
    } else {
        CE_FNL(ce_block_out)(buf, a, grows, gc, n, m, n_tiles, start, half);
    }
    for (k = 0; k < n; k++) {
        T *gk = grows[k];
        if (t[k] < 0) { for (j = 0; j < m; j++) gk[j * gc] = 0; continue; }
        gk[t[k] * gc] = (T)gt[k];
    }
    if (h == NULL) return total;
    /* The Hessian's diagonal, over the exps in place (the gradient is out). */
    T *hrow_list[CE_ROWS];
    double inv2[CE_ROWS];
    CE_FNL(ce_row_list)(h, n, hrow_list);
    for (k = 0; k < CE_ROWS; k++) {
        inv2[k] = 1.0 / (s[k] * s[k]);
        a[k] = 1;
    }
    for (j = 0; j < m; j++) {
        T *col = buf + j * CE_ROWS;
        for (k = 0; k < CE_ROWS; k++) {
            double e = col[k];
            col[k] = (T)(e * (gw[k] * (s[k] - e)) * inv2[k]);
        }
    }
    CE_FNL(ce_block_out)(buf, a, hrow_list, hc, n, m, n_tiles, start, half);
    for (k = 0; k < n; k++)
        if (t[k] < 0)
            for (j = 0; j < m; j++) hrow_list[k][j * hc] = 0;
    return total;
}
