/*
 * The harness's checks for one type T (type_f32.h or type_f64.h before this
 * file, type_undef.h after it), as the kernels' own templates are written.
 */

/* The short-row block moves rows with contiguous classes by register tiles
   (whole and half) and strided rows element by element: both must give the
   same bits (loss, block sum, gradient and Hessian diagonal; NaN for NaN),
   for every row length
   1..64 and every block size 1..64 (with `step` > 1, for emulated builds:
   the sizes 1..8, every step-th after them, and 64), with rows given by a
   first row and a step or by a list of addresses.  Each contiguous row sits
   at the very end of a page followed by an inaccessible one, or at the very
   start of a page after one, so a tile that reads or writes past a row's
   classes crashes the harness.  Odd blocks span more than the one-scale exp's range (the
   two-scale exp runs there) and hold a -inf and a NaN logit; row 3 is
   ignored.  Returns the number of disagreements. */
static long long CE_FN(tile_disagreements)(int step)
{
    static char *zpages, *gpages, *hpages;
    static T zt[64 * CE_ROWS], g2[64 * CE_ROWS], h2[64 * CE_ROWS];
    long pg = page_size();
    long long bad = 0;
    uint64_t st = 99;
    static T blk[CE_SHORT_MAX * CE_ROWS] CE_ALIGNED(32);
    if (zpages == NULL) {
        zpages = guarded_pages(CE_ROWS);
        gpages = guarded_pages(CE_ROWS);
        hpages = guarded_pages(CE_ROWS);
    }
    for (int at_end = 0; at_end < 2; at_end++)
    for (int m = 1; m <= 64; m++)
    for (int n = 1; n <= CE_ROWS;
         n = n < 8 || n == CE_ROWS ? n + 1 : n + step < CE_ROWS ? n + step : CE_ROWS) {
        void *zl[CE_ROWS], *gl[CE_ROWS], *hl[CE_ROWS], *zl2[CE_ROWS], *gl2[CE_ROWS],
             *hl2[CE_ROWS];
        ptrdiff_t t[2 * CE_ROWS];
        double l1[CE_ROWS], l2[CE_ROWS], l3[CE_ROWS];
        size_t off = at_end ? (size_t)pg - m * sizeof(T) : 0;
        for (int k = 0; k < n; k++) {
            T *z = (T *)(zpages + 2 * k * pg + off);
            for (int j = 0; j < m; j++) {
                st = st * 6364136223846793005u + 1442695040888963407u;
                z[j] = (T)(((double)(st >> 11) * 0x1p-53 - 0.5) * (n % 2 ? 2000.0 : 20.0));
            }
            if (n % 2 && k == 1) z[0] = -INFINITY;
            if (n % 2 && k == 2) z[m / 2] = NAN;
            st = st * 6364136223846793005u + 1442695040888963407u;
            t[2 * k] = k == 3 ? -100 : (ptrdiff_t)((st >> 33) % (uint64_t)m);
            t[2 * k + 1] = 0;
            for (int j = 0; j < m; j++) zt[j * CE_ROWS + k] = z[j];
            zl[k] = z;
            gl[k] = gpages + 2 * k * pg + off;
            hl[k] = hpages + 2 * k * pg + off;
            zl2[k] = zt + k;
            gl2[k] = g2 + k;
            hl2[k] = h2 + k;
        }
        /* contiguous rows: evenly spaced, then listed; strided rows */
        ce_rows z1 = {zpages + off, 2 * pg, NULL}, g1 = {gpages + off, 2 * pg, NULL},
                h1 = {hpages + off, 2 * pg, NULL};
        ce_rows z3 = {NULL, 0, zl}, g3 = {NULL, 0, gl}, h3 = {NULL, 0, hl};
        ce_rows z2 = {NULL, 0, zl2}, gs2 = {NULL, 0, gl2}, hs2 = {NULL, 0, hl2};
        ptrdiff_t ts = 2 * sizeof(ptrdiff_t);
        double s2 = CE_FN(ce_short_xent)(&z2, CE_ROWS, t, ts, -100, NULL, n, m, &gs2, CE_ROWS,
                                        &hs2, CE_ROWS, 0.5, l2, NULL, blk);
        for (int pass = 0; pass < 2; pass++) {
            for (int k = 0; k < n; k++)       /* nothing left from the last */
                for (int j = 0; j < m; j++) ((T *)gl[k])[j] = ((T *)hl[k])[j] = (T)12345;
            double s1 = CE_FN(ce_short_xent)(pass ? &z3 : &z1, 1, t, ts, -100, NULL, n, m,
                                            pass ? &g3 : &g1, 1, pass ? &h3 : &h1, 1, 0.5, l1,
                                            NULL, blk);
            bad += !CE_SAME(s1, s2);
            for (int k = 0; k < n; k++) {
                bad += !CE_SAME(l1[k], l2[k]);
                T *g = (T *)gl[k], *h = (T *)hl[k];
                for (int j = 0; j < m; j++) {
                    bad += !CE_SAME(g[j], g2[j * CE_ROWS + k]);
                    bad += !CE_SAME(h[j], h2[j * CE_ROWS + k]);
                }
            }
        }
        /* the loss alone: the same losses */
        CE_FN(ce_short_xent)(&z1, 1, t, ts, -100, NULL, n, m, NULL, 1, NULL, 1, 0.5, l3, NULL, blk);
        for (int k = 0; k < n; k++) bad += !CE_SAME(l3[k], l2[k]);
        if (n > 3) bad += l2[3] != 0.0;          /* the ignored row */
    }
    return bad;
}

/* A NaN in a row whose other logits are all within the one-scale exp's range
   keeps the row off that exp (ce_max's min is NaN), whatever the NaN's
   payload: the row's exp sum must be NaN, with and without storing the exps.
   Returns the number of rows that came out as numbers. */
static long long CE_FN(nan_misses)(void)
{
    static T x[1000], out[1000], blk[CE_BLOCK];
    static const U payloads[] = {1, 0x1FF, 0x123, 0x3FF};
    const U quiet = ((U)-1 >> 1) & ~(((U)1 << (CE_MANT - 1)) - 1);   /* exponent all ones, top mantissa bit */
    long long bad = 0;
    for (int i = 0; i < 1000; i++) x[i] = (T)((i * 37 % 1000) / 100.0 - 5.0);
    for (int q = 0; q < 4; q++)
        for (int sign = 0; sign < 2; sign++)
            for (int pos = 0; pos < 1000; pos += 111) {
                T keep = x[pos], lo, top;
                U bits = quiet | payloads[q] | ((U)sign << (8 * sizeof(T) - 1));
                memcpy(&x[pos], &bits, sizeof(T));
                top = CE_FN(ce_max)(x, 1000, &lo);
                double s1 = CE_FN(ce_expsum)(x, out, 1000, top, lo, NULL, NULL);
                double s2 = CE_FN(ce_sumexp)(x, 1000, top, lo, NULL, blk);
                bad += !(s1 != s1) + !(s2 != s2);
                x[pos] = keep;
            }
    return bad;
}
