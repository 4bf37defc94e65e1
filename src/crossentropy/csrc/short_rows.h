/*
 * Short rows, many at a time: the across-rows block kernel (ce_short_xent)
 * and the register tiles that move rows into and out of its [class][row]
 * buffer; short_rows_template.h holds them once for both types, this file
 * the vector API they are written against and what needs no type.
 */
#ifndef CE_SHORT_ROWS_H
#define CE_SHORT_ROWS_H

#include "platform.h"
#include "expmath.h"
#include "rows.h"

/* Where a block's rows start: at at[k], or, where at == NULL, at base + k *
   step bytes (rows evenly spaced, as rows of a matrix are: then the caller
   sets up nothing per row).  The same struct describes the logits (read
   only) and the gradient rows. */
typedef struct {
    char *base;
    ptrdiff_t step;
    void *const *at;
} ce_rows;

/* x[0] + ... + x[63] in a fixed order that vectorises: four lanes, then
   (lane 0 + lane 1) + (lane 2 + lane 3). */
CE_INLINE double ce_sum64(const double *x)
{
    double lane[4] = {0.0, 0.0, 0.0, 0.0};
    for (int k = 0; k < CE_ROWS; k += 4)
        for (int l = 0; l < 4; l++) lane[l] += x[k + l];
    return (lane[0] + lane[1]) + (lane[2] + lane[3]);
}

/* The tiles that cover classes 0..m-1 for vectors of vl elements (m >=
   vl/2): whole tiles, then for the rest a whole tile ending at m when more
   than half a tile is left, else half tiles (two when m < vl, which may
   overlap).  Overlapping tiles move the same values twice.  Returns the
   number of tiles; tile i starts at class start[i], half[i] says which kind. */
CE_INLINE int ce_tiles(ptrdiff_t m, ptrdiff_t vl, ptrdiff_t *start, int *half)
{
    int n = 0;
    ptrdiff_t j = 0;
    for (; j + vl <= m; j += vl) { start[n] = j; half[n++] = 0; }
    if (j < m) {
        if (m - j > vl / 2 && m >= vl) {
            start[n] = m - vl; half[n++] = 0;
        } else {
            if (m - j > vl / 2) { start[n] = j; half[n++] = 1; }
            start[n] = m - vl / 2; half[n++] = 1;
        }
    }
    return n;
}

#if CE_GNU            /* the register tiles need GNU C's vector extensions */
/*
 * The vector API: 32-byte vectors (ce_vec) and 16-byte halves (ce_half) of
 * each type, their unaligned forms for loads and stores at any element
 * (ce_uvec, ce_uhalf), and index vectors (ce_idx); two-vector shuffles with constant
 * indices, CE_SHUFFLE(a, b, F) with F(j) the source of element j (b's
 * elements numbered from CE_VL on), two halves joined into one vector
 * (CE_JOIN) and a vector's halves (CE_LOW, CE_HIGH).  GCC >= 12 and clang
 * spell these __builtin_shufflevector; older GCC only has __builtin_shuffle
 * with a mask, which cannot change the width, so there the joins and halves
 * are built element by element.  CE_OLD_SHUFFLE forces the older spelling
 * (the tests build it both ways).
 */
typedef float ce_vec_f32 __attribute__((vector_size(32)));
typedef double ce_vec_f64 __attribute__((vector_size(32)));
typedef float ce_uvec_f32 __attribute__((vector_size(32), aligned(4), may_alias));
typedef double ce_uvec_f64 __attribute__((vector_size(32), aligned(8), may_alias));
typedef uint32_t ce_idx_f32 __attribute__((vector_size(32)));
typedef uint64_t ce_idx_f64 __attribute__((vector_size(32)));
typedef float ce_half_f32 __attribute__((vector_size(16)));
typedef double ce_half_f64 __attribute__((vector_size(16)));
typedef float ce_uhalf_f32 __attribute__((vector_size(16), aligned(4), may_alias));
typedef double ce_uhalf_f64 __attribute__((vector_size(16), aligned(8), may_alias));

#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && !defined(CE_OLD_SHUFFLE)
#define CE_SHUFFLE_f32(a, b, F) \
    __builtin_shufflevector(a, b, F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7))
#define CE_SHUFFLE_f64(a, b, F) __builtin_shufflevector(a, b, F(0), F(1), F(2), F(3))
#define CE_JOIN_f32(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7)
#define CE_JOIN_f64(a, b) __builtin_shufflevector(a, b, 0, 1, 2, 3)
#define CE_LOW_f32(v) __builtin_shufflevector(v, v, 0, 1, 2, 3)
#define CE_HIGH_f32(v) __builtin_shufflevector(v, v, 4, 5, 6, 7)
#define CE_LOW_f64(v) __builtin_shufflevector(v, v, 0, 1)
#define CE_HIGH_f64(v) __builtin_shufflevector(v, v, 2, 3)
#else
#define CE_SHUFFLE_f32(a, b, F) \
    __builtin_shuffle(a, b, (ce_idx_f32){F(0), F(1), F(2), F(3), F(4), F(5), F(6), F(7)})
#define CE_SHUFFLE_f64(a, b, F) __builtin_shuffle(a, b, (ce_idx_f64){F(0), F(1), F(2), F(3)})
#define CE_JOIN_f32(a, b) \
    ((ce_vec_f32){(a)[0], (a)[1], (a)[2], (a)[3], (b)[0], (b)[1], (b)[2], (b)[3]})
#define CE_JOIN_f64(a, b) ((ce_vec_f64){(a)[0], (a)[1], (b)[0], (b)[1]})
#define CE_LOW_f32(v) ((ce_half_f32){(v)[0], (v)[1], (v)[2], (v)[3]})
#define CE_HIGH_f32(v) ((ce_half_f32){(v)[4], (v)[5], (v)[6], (v)[7]})
#define CE_LOW_f64(v) ((ce_half_f64){(v)[0], (v)[1]})
#define CE_HIGH_f64(v) ((ce_half_f64){(v)[2], (v)[3]})
#endif

/* Shuffle indices for a transpose, for the type of the template using them:
   unpacking two vectors g elements at a time within each 128-bit lane of
   CE_LANE elements (the low or the high halves of the lanes), and joining
   their low or high 128-bit halves. */
#define CE_IX_LO(j, g) ((j) % CE_LANE / (g) % 2 * CE_VL + (j) / CE_LANE * CE_LANE \
                        + (j) % CE_LANE / (2 * (g)) * (g) + (j) % (g))
#define CE_IX_HI(j, g) (CE_IX_LO(j, g) + CE_LANE / 2)
#define CE_LO1(j) CE_IX_LO(j, 1)
#define CE_HI1(j) CE_IX_HI(j, 1)
#define CE_LO2(j) CE_IX_LO(j, 2)
#define CE_HI2(j) CE_IX_HI(j, 2)
#define CE_HALF_LO(j) ((j) < CE_VL / 2 ? (j) : (j) + CE_VL / 2)
#define CE_HALF_HI(j) ((j) < CE_VL / 2 ? (j) + CE_VL / 2 : (j) + CE_VL)
#endif

#endif /* CE_SHORT_ROWS_H */
