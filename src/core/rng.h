/*
 * rng.h — the project's one portable random generator: splitmix64. The same seed gives
 * the same numbers on every machine and compiler, which makes initialisation, data
 * order, dropout and sampling reproducible. Header-only; no state beyond the caller's.
 */
#ifndef LC_RNG_H
#define LC_RNG_H

#include <stdint.h>

/* The next 64 random bits of the stream whose state is *s (advances it). */
static inline uint64_t lc_splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* A uniform double in [0, 1) with 53 random bits (advances *s). */
static inline double lc_uniform(uint64_t *s) { return (double)(lc_splitmix64(s) >> 11) * 0x1.0p-53; }

/* A stateless 64-bit mix of x (splitmix64's finalizer): derive a seed from numbers. */
static inline uint64_t lc_mix64(uint64_t x) {
    uint64_t s = x;
    return lc_splitmix64(&s);
}

#endif
