/*
 * sha256.h — SHA-256 (FIPS 180-4), to check downloaded files against the Hub's LFS
 * digests. Pure computation: no I/O, no allocation.
 */
#ifndef LC_SHA256_H
#define LC_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t bytes;
    unsigned char block[64];
    size_t fill;
} lc_sha256;

void lc_sha256_init(lc_sha256 *s);
/* Adds n bytes to the message. */
void lc_sha256_update(lc_sha256 *s, const void *p, size_t n);
/* The digest as 64 lowercase hex digits and a NUL in hex. */
void lc_sha256_final_hex(lc_sha256 *s, char hex[65]);

#endif
