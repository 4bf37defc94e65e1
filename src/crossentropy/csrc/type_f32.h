/*
 * Template parameters for float, names suffixed _f32: included before a
 * *_template.h and undone by type_undef.h after it (as CPython's
 * Objects/stringlib/ucs1lib.h).
 */
#define T float
#define U uint32_t              /* T's bits */
#define CE_FN(name) name##_f32
#define CE_FNL(name) CE_LEVEL_NAME(name##_f32)   /* per ISA level too (kernels_template.h) */
#define CE_MANT 23              /* mantissa bits */
#define CE_BIAS 127u            /* exponent bias */
#define CE_MAGIC 0x1.8p23f      /* 1.5 * 2^CE_MANT: adding it rounds to an integer */
#define CE_INF INFINITY
#define CE_EXP_LOW (-110.0f)    /* the exp's clamps (see exp_template.h) */
#define CE_EXP_HIGH 89.0f
#define CE_NORMAL CE_NORMAL_f32
#define CE_VL 8                 /* elements of a 32-byte vector */
#define CE_LANE 4               /* elements of a 128-bit lane */
