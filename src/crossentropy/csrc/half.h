/*
 * Half-precision storage: IEEE binary16 (float16) and bfloat16, read into
 * float32 and written back, rounding to nearest even: the scalar rules here,
 * their loops (ce_widen_f16, ...) per ISA level in kernels_template.h.  Half-precision logits
 * are computed by the float32 kernels, a block of rows at a time (_api.py);
 * these are the conversions at the block's edges.
 *
 * Branch-free integer and float operations (selects, not branches), so that
 * the compiler vectorises the loops at any ISA level without F16C or
 * AVX512-BF16; float16 follows F. Giesen's public-domain conversions
 * (half_to_float_fast4, float_to_half_fast3_rtne).  NaN stays NaN (quiet,
 * its sign kept; float16's payload is not); overflow rounds to infinity.
 */
#ifndef CE_HALF_H
#define CE_HALF_H

#include "platform.h"

CE_INLINE uint32_t ce_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
CE_INLINE float ce_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

CE_INLINE float ce_bf16_to_float(uint16_t h)
{
    return ce_float((uint32_t)h << 16);
}

CE_INLINE uint16_t ce_float_to_bf16(float f)
{
    uint32_t u = ce_bits(f);
    uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    return (uint16_t)(((u & 0x7fffffffu) > 0x7f800000u) ? ((u >> 16) | 0x0040u) : rounded);
}

CE_INLINE float ce_f16_to_float(uint16_t h)
{
    uint32_t u = (uint32_t)(h & 0x7fffu) << 13;     /* exponent and mantissa */
    uint32_t e = u & 0x0f800000u;
    uint32_t v = u + 0x38000000u;                   /* rebias: (127 - 15) << 23 */
    v = (e == 0x0f800000u) ? v + 0x38000000u : v;   /* inf and NaN: all exponent bits */
    /* subnormal or zero: exact, as a float subtraction of 2^-14 */
    uint32_t sub = ce_bits(ce_float(v + 0x00800000u) - 6.103515625e-05f);
    v = (e == 0) ? sub : v;
    return ce_float(v | ((uint32_t)(h & 0x8000u) << 16));
}

CE_INLINE uint16_t ce_float_to_f16(float f)
{
    uint32_t u = ce_bits(f);
    uint32_t sign = u & 0x80000000u;
    u ^= sign;
    /* (int32 compares: every operand is below 2^31, as SSE2 compares want) */
    int32_t a = (int32_t)u;
    uint32_t special = (a > 0x7f800000) ? 0x7e00u : 0x7c00u;        /* NaN, or inf */
    /* subnormal or zero: the float addition of 0.5 rounds to nearest even */
    uint32_t sub = ce_bits(ce_float(u) + 0.5f) - 0x3f000000u;
    uint32_t normal = (u + 0xc8000fffu + ((u >> 13) & 1u)) >> 13;   /* rebias, round */
    uint32_t h = (a >= 0x47800000) ? special : (a < 0x38800000) ? sub : normal;
    return (uint16_t)(h | (sign >> 16));
}

/* n values, src[k * step] into dst[k * dstep] (steps in elements); unit
 * steps take the loop the compiler vectorises.  Compiled per ISA level
 * (kernels_template.h): the same bits at every level, wider vectors. */
#define CE_CONVERT_LOOP(name, S, D, convert)                                              \
    static CE_TARGET void CE_LEVEL_NAME(name)(const S *src, ptrdiff_t step, D *dst,        \
                                              ptrdiff_t dstep, ptrdiff_t n)              \
    {                                                                                     \
        if (step == 1 && dstep == 1) {                                                    \
            CE_SIMD                                                                       \
            for (ptrdiff_t k = 0; k < n; k++)                                             \
                dst[k] = convert(src[k]);                                                 \
        } else {                                                                          \
            for (ptrdiff_t k = 0; k < n; k++)                                             \
                dst[k * dstep] = convert(src[k * step]);                                  \
        }                                                                                 \
    }

#endif /* CE_HALF_H */
