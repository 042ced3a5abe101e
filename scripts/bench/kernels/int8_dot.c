/* The cores' int8 dot-product throughput with the instructions llama.cpp's CPU matrix kernels use.
 *
 * llama.cpp multiplies 4-bit weights by 8-bit activations (Q4_K x Q8_K, Q4_0 x Q8_0): unpacked to unsigned
 * bytes, multiplied with signed bytes and summed in pairs. On AVX2 that is vpmaddubsw (32 byte products per
 * 256-bit instruction, summed into 16-bit lanes) followed by an add (the repacked Q4_K GEMM,
 * ggml-cpu/arch/x86/repack.cpp); with AVX-512 the same on 512 bits, and with AVX512-VNNI one vpdpbusd (64 byte
 * products summed into 32-bit lanes). Each function below keeps twelve independent accumulators in registers
 * (named variables, not an array: no register copies or stack traffic in the loop), so the loop is bound by how
 * many of those instructions a core retires per cycle, never by memory: a measured ceiling of the instruction
 * mix, not an estimate from the ISA.
 *
 * Each returns a value that depends on every step, so the compiler cannot drop the work. A call performs
 * iterations * 12 * (bytes per vector) byte products. Built by scripts/bench/prefill_roofline.py with -O2; each
 * function names the one instruction set it needs (target attributes), so one file serves every CPU.
 */
#include <immintrin.h>
#include <stdint.h>

#define TWELVE(step) step(0) step(1) step(2) step(3) step(4) step(5) step(6) step(7) step(8) step(9) step(10) step(11)
#define DECLARE(c) V a##c = SET_START(seed + c);
#define FOLD(c) total = XOR(total, a##c);

/* Each result feeds the next step of its chain: the product cannot be hoisted out of the loop. */
#define V __m256i
#define SET_START(x) _mm256_set1_epi8((char)(x))
#define XOR _mm256_xor_si256
#define STEP(c) a##c = _mm256_add_epi16(_mm256_maddubs_epi16(a##c, weights), bias);
__attribute__((target("avx2"))) int64_t maddubs_avx2(int64_t iterations, int8_t seed) {
    const __m256i weights = _mm256_set1_epi8((char)(seed | 1));
    const __m256i bias = _mm256_set1_epi16(seed);
    TWELVE(DECLARE)
    for (int64_t i = 0; i < iterations; i++) {
        TWELVE(STEP)
    }
    __m256i total = _mm256_setzero_si256();
    TWELVE(FOLD)
    return _mm256_extract_epi64(total, 0) ^ _mm256_extract_epi64(total, 3);
}
#undef V
#undef SET_START
#undef XOR
#undef STEP

#define V __m512i
#define SET_START(x) _mm512_set1_epi8((char)(x))
#define XOR _mm512_xor_si512
#define STEP(c) a##c = _mm512_add_epi16(_mm512_maddubs_epi16(a##c, weights), bias);
__attribute__((target("avx512f,avx512bw"))) int64_t maddubs_avx512(int64_t iterations, int8_t seed) {
    const __m512i weights = _mm512_set1_epi8((char)(seed | 1));
    const __m512i bias = _mm512_set1_epi16(seed);
    TWELVE(DECLARE)
    for (int64_t i = 0; i < iterations; i++) {
        TWELVE(STEP)
    }
    __m512i total = _mm512_setzero_si512();
    TWELVE(FOLD)
    return _mm512_reduce_add_epi64(total);
}
#undef STEP

/* Accumulates in place, as the VNNI kernels do. */
#define STEP(c) a##c = _mm512_dpbusd_epi32(a##c, activations, weights);
__attribute__((target("avx512f,avx512bw,avx512vnni"))) int64_t dpbusd_avx512(int64_t iterations, int8_t seed) {
    const __m512i activations = _mm512_set1_epi8((char)(seed | 1));
    const __m512i weights = _mm512_set1_epi8((char)(seed + 3));
    TWELVE(DECLARE)
    for (int64_t i = 0; i < iterations; i++) {
        TWELVE(STEP)
    }
    __m512i total = _mm512_setzero_si512();
    TWELVE(FOLD)
    return _mm512_reduce_add_epi64(total);
}
