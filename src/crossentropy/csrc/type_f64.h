/* Template parameters for double, names suffixed _f64 (see type_f32.h). */
#define T double
#define U uint64_t
#define CE_FN(name) name##_f64
#define CE_FNL(name) CE_LEVEL_NAME(name##_f64)   /* per ISA level too (kernels_template.h) */
#define CE_MANT 52
#define CE_BIAS UINT64_C(1023)
#define CE_MAGIC 0x1.8p52
#define CE_INF ((double)INFINITY)
#define CE_EXP_LOW (-750.0)
#define CE_EXP_HIGH 710.0
#define CE_NORMAL CE_NORMAL_f64
#define CE_VL 4
#define CE_LANE 2
