// x86 policies for the shared LoRA up-projection walk (../lora_up.h): a panel of 16 floats is two AVX2 vectors
// or one AVX-512 vector. Included by avx2.cpp and avx512.cpp; linkage: see x86_base.h.
#pragma once
#include "../lora_up.h"
#include "x86_base.h"

namespace floe::x86 {
namespace {

struct LoraAvx2 {
    struct Acc {
        __m256 lo, hi;
    };
    static Acc zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
    static Acc fma(Acc a, const float* b, float t) {
        const __m256 vt = _mm256_set1_ps(t);
        return {_mm256_fmadd_ps(_mm256_loadu_ps(b), vt, a.lo), _mm256_fmadd_ps(_mm256_loadu_ps(b + 8), vt, a.hi)};
    }
    static Acc fma(Acc a, const fp16_t* b, float t) {
        const __m256 vt = _mm256_set1_ps(t);
        const __m256 lo = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
        const __m256 hi = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 8)));
        return {_mm256_fmadd_ps(lo, vt, a.lo), _mm256_fmadd_ps(hi, vt, a.hi)};
    }
    static Acc scaled(Acc a, float s) {
        const __m256 vs = _mm256_set1_ps(s);
        return {mul_rounded(a.lo, vs), mul_rounded(a.hi, vs)};
    }
    static Acc add(Acc a, Acc b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
    static void add_to(float* y, Acc d) {
        _mm256_storeu_ps(y, _mm256_add_ps(_mm256_loadu_ps(y), d.lo));
        _mm256_storeu_ps(y + 8, _mm256_add_ps(_mm256_loadu_ps(y + 8), d.hi));
    }
    static void store(float* out, Acc d) {
        _mm256_storeu_ps(out, d.lo);
        _mm256_storeu_ps(out + 8, d.hi);
    }
};

#if defined(__AVX512F__)
struct LoraAvx512 {
    using Acc = __m512;
    static Acc zero() { return _mm512_setzero_ps(); }
    static Acc fma(Acc a, const float* b, float t) { return _mm512_fmadd_ps(_mm512_loadu_ps(b), _mm512_set1_ps(t), a); }
    static Acc fma(Acc a, const fp16_t* b, float t) {
        const __m512 v = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b)));
        return _mm512_fmadd_ps(v, _mm512_set1_ps(t), a);
    }
    static Acc scaled(Acc a, float s) {  // rounded on its own, as mul_rounded
        __m512 p = _mm512_mul_ps(a, _mm512_set1_ps(s));
        __asm__("" : "+v"(p));
        return p;
    }
    static Acc add(Acc a, Acc b) { return _mm512_add_ps(a, b); }
    static void add_to(float* y, Acc d) { _mm512_storeu_ps(y, _mm512_add_ps(_mm512_loadu_ps(y), d)); }
    static void store(float* out, Acc d) { _mm512_storeu_ps(out, d); }
};
#endif

}  // namespace
}  // namespace floe::x86
