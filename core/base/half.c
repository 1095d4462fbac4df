/* half.c — 16-bit floats: bfloat16 and IEEE binary16, to and from float32.
 *
 * Bit for bit as PyTorch converts on the CPU, so a file written here and
 * read there (or the other way) holds the same numbers: c10::BFloat16 for
 * bfloat16, c10::Half (the FP16 library's conversion, as F16C does it) for
 * binary16.  Plain integer arithmetic on the bits: the result does not
 * depend on the compiler's floating-point flags or the processor.
 */
#include "fm/fm_base.h"

#include <string.h>

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* c10::detail::round_to_nearest_even: adding 0x7FFF, plus one when the
 * kept part is odd, carries into bit 16 exactly when the dropped half is
 * above one half, or one half with an odd kept part.  A carry out of the
 * mantissa raises the exponent, which is right (up to infinity); NaN is
 * tested first because the addition could turn one into infinity.  Every
 * NaN becomes 0x7FC0, the sign and payload dropped, as c10 does. */
uint16_t fm_bf16_from_f32(float x)
{
    uint32_t u = bits_of(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
    return (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

float fm_f32_from_bf16(uint16_t h)
{
    return float_of((uint32_t)h << 16);
}

/* Normal results: rebias 127 -> 15 and round the 13 dropped bits as
 * fm_bf16_from_f32 rounds its 16 (a carry raises the exponent, which is
 * right).  Subnormal ones: the significand, its implicit bit made explicit,
 * shifted to units of 2^-24 and rounded to nearest even. */
uint16_t fm_f16_from_f32(float x)
{
    uint32_t u = bits_of(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7FFFFFFFu;
    if (a > 0x7F800000u) return sign | 0x7E00u;  /* NaN */
    if (a >= 0x477FF000u) return sign | 0x7C00u;  /* 65520 (65504 + half an ulp) and up */
    if (a >= 0x38800000u)                         /* 2^-14 and up: normal */
        return sign | (uint16_t)((a - 0x38000000u + 0xFFFu + ((a >> 13) & 1u)) >> 13);
    if (a <= 0x33000000u) return sign;            /* 2^-25 and below: zero */
    uint32_t e = a >> 23, m = (a & 0x7FFFFFu) | 0x800000u;  /* |x| = m * 2^(e - 150) */
    uint32_t shift = 126 - e;                               /* 14..24 */
    uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
    q += rem > half || (rem == half && (q & 1u));
    return sign | (uint16_t)q;
}

float fm_f32_from_f16(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0x1F)  /* infinity, or NaN: payload kept, made quiet as F16C does */
        return float_of(sign | 0x7F800000u | mant << 13 | (mant ? 0x00400000u : 0));
    if (exp != 0)  /* normal: rebias 15 -> 127 */
        return float_of(sign | (exp + 112u) << 23 | mant << 13);
    if (mant == 0)
        return float_of(sign);
    /* Subnormal, mant * 2^-24: normal in float32 once its leading one is
     * moved to bit 10 (the implicit bit). */
    uint32_t e = 113;
    while (!(mant & 0x400u)) {
        mant <<= 1;
        e--;
    }
    return float_of(sign | e << 23 | (mant & 0x3FFu) << 13);
}

void fm_bf16_from_f32_n(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fm_bf16_from_f32(src[i]);
}

void fm_f16_from_f32_n(uint16_t *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fm_f16_from_f32(src[i]);
}

void fm_f32_from_bf16_n(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fm_f32_from_bf16(src[i]);
}

void fm_f32_from_f16_n(float *dst, const uint16_t *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = fm_f32_from_f16(src[i]);
}

const char *fm_float_dtype_name(fm_float_dtype d)
{
    return d == FM_FLOAT_BF16 ? "bf16" : d == FM_FLOAT_F16 ? "f16" : "f32";
}

fm_status fm_float_dtype_parse(const char *name, fm_float_dtype *out)
{
    if (strcmp(name, "f32") == 0) {
        *out = FM_FLOAT_F32;
        return FM_OK;
    }
    if (strcmp(name, "bf16") == 0) {
        *out = FM_FLOAT_BF16;
        return FM_OK;
    }
    if (strcmp(name, "f16") == 0) {
        *out = FM_FLOAT_F16;
        return FM_OK;
    }
    return fm_error_set(FM_ERR_ARG, "unknown dtype '%s' (choose f32, bf16 or f16)", name);
}
