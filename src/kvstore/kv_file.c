/* The kvstore block file format (layout in kv_internal.h): header encoding, header parsing
 * and validation, payload digests (whole, or checked a chunk at a time as it is read). Pure
 * functions over bytes. */
#include <stdio.h>
#include <string.h>

#include "kvstore/kv_internal.h"

#define OFF_VERSION 8
#define OFF_HDRLEN 12
#define OFF_NS 16
#define OFF_KEY 48
#define OFF_INDEX 80
#define OFF_PAYLOAD 88
#define OFF_LAYOUT 96
#define OFF_HSUM 224
#define OFF_SUM 256

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}
static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void digest_bytes(XXH128_hash_t h, uint8_t out[ZS_KV_HASH_BYTES]) {
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(h.high64 >> (56 - 8 * i));
        out[8 + i] = (uint8_t)(h.low64 >> (56 - 8 * i));
    }
    memset(out + 16, 0, ZS_KV_HASH_BYTES - 16);
}

void kv_payload_digest(const void *payload, size_t n, uint8_t out[ZS_KV_HASH_BYTES]) {
    digest_bytes(XXH3_128bits(payload, n), out);
}

/* Header bytes with header_sum zeroed. */
static void hdr_zeroed(const uint8_t *hdr, uint8_t z[KVF_HDR_BYTES]) {
    memcpy(z, hdr, KVF_HDR_BYTES);
    memset(z + OFF_HSUM, 0, ZS_KV_HASH_BYTES);
}

int kvf_encode(kvf_meta_t *m, const void *payload, uint8_t out[KVF_HDR_BYTES], zs_err_t *err) {
    size_t ll = strnlen(m->layout, sizeof m->layout);
    if (ll == 0 || ll >= sizeof m->layout)
        return zs_err_set(err, ZS_EINVAL, "kv block file: layout descriptor empty or longer than %d bytes",
                          ZS_KV_LAYOUT_MAX - 1);
    if (m->payload_bytes == 0 || m->payload_bytes > KVF_MAX_PAYLOAD)
        return zs_err_set(err, ZS_ERANGE, "kv block file: payload of %llu bytes",
                          (unsigned long long)m->payload_bytes);
    memset(out, 0, KVF_HDR_BYTES);
    memcpy(out, KVF_MAGIC, sizeof KVF_MAGIC); /* 7 chars + NUL */
    put_u32(out + OFF_VERSION, KVF_VERSION);
    put_u32(out + OFF_HDRLEN, KVF_HDR_BYTES);
    memcpy(out + OFF_NS, m->ns.b, ZS_KV_HASH_BYTES);
    memcpy(out + OFF_KEY, m->key.b, ZS_KV_HASH_BYTES);
    put_u64(out + OFF_INDEX, m->block_index);
    put_u64(out + OFF_PAYLOAD, m->payload_bytes);
    memcpy(out + OFF_LAYOUT, m->layout, ll);
    kv_payload_digest(payload, (size_t)m->payload_bytes, m->sum);
    memcpy(out + OFF_SUM, m->sum, ZS_KV_HASH_BYTES);
    const void *p1[1] = {out}; /* header_sum is still zero here */
    size_t l1[1] = {KVF_HDR_BYTES};
    if (kv_sha256(p1, l1, 1, out + OFF_HSUM) != ZS_OK) return zs_err_set(err, ZS_EIO, "kv block file: SHA-256 failed");
    return ZS_OK;
}

int kvf_parse(const uint8_t *hdr, size_t n, const char *what, kvf_meta_t *m, zs_err_t *err) {
    if (n < KVF_HDR_BYTES)
        return zs_err_set(err, ZS_EFORMAT, "%s: %zu bytes, shorter than the %u-byte header", what, n, KVF_HDR_BYTES);
    if (memcmp(hdr, KVF_MAGIC, sizeof KVF_MAGIC) != 0)
        return zs_err_set(err, ZS_EFORMAT, "%s: not a zerostart KV block file (bad magic)", what);
    uint32_t ver = get_u32(hdr + OFF_VERSION), hl = get_u32(hdr + OFF_HDRLEN);
    if (ver != KVF_VERSION || hl != KVF_HDR_BYTES)
        return zs_err_set(err, ZS_EFORMAT, "%s: version %u header %u (this build reads version %u, header %u)", what,
                          ver, hl, KVF_VERSION, KVF_HDR_BYTES);
    uint8_t z[KVF_HDR_BYTES], hs[ZS_KV_HASH_BYTES];
    hdr_zeroed(hdr, z);
    const void *p[1] = {z};
    size_t l[1] = {KVF_HDR_BYTES};
    if (kv_sha256(p, l, 1, hs) != ZS_OK) return zs_err_set(err, ZS_EIO, "%s: SHA-256 failed", what);
    if (memcmp(hs, hdr + OFF_HSUM, ZS_KV_HASH_BYTES) != 0)
        return zs_err_set(err, ZS_EFORMAT, "%s: header checksum mismatch", what);
    memset(m, 0, sizeof *m);
    memcpy(m->ns.b, hdr + OFF_NS, ZS_KV_HASH_BYTES);
    memcpy(m->key.b, hdr + OFF_KEY, ZS_KV_HASH_BYTES);
    m->block_index = get_u64(hdr + OFF_INDEX);
    m->payload_bytes = get_u64(hdr + OFF_PAYLOAD);
    const char *lay = (const char *)hdr + OFF_LAYOUT;
    size_t ll = strnlen(lay, ZS_KV_LAYOUT_MAX);
    if (ll == 0 || ll >= ZS_KV_LAYOUT_MAX)
        return zs_err_set(err, ZS_EFORMAT, "%s: layout descriptor empty or not terminated", what);
    for (size_t i = ll; i < ZS_KV_LAYOUT_MAX; i++)
        if (lay[i] != '\0') return zs_err_set(err, ZS_EFORMAT, "%s: bytes after the layout descriptor", what);
    memcpy(m->layout, lay, ll);
    if (m->payload_bytes == 0 || m->payload_bytes > KVF_MAX_PAYLOAD)
        return zs_err_set(err, ZS_EFORMAT, "%s: payload size %llu out of range", what,
                          (unsigned long long)m->payload_bytes);
    memcpy(m->sum, hdr + OFF_SUM, ZS_KV_HASH_BYTES);
    return ZS_OK;
}

void kvf_check_begin(kvf_check_t *c) { (void)XXH3_128bits_reset(&c->st); }

void kvf_check_update(kvf_check_t *c, const void *chunk, size_t n) { (void)XXH3_128bits_update(&c->st, chunk, n); }

int kvf_check_end(kvf_check_t *c, const kvf_meta_t *m, const char *what, zs_err_t *err) {
    uint8_t s[ZS_KV_HASH_BYTES];
    digest_bytes(XXH3_128bits_digest(&c->st), s);
    if (memcmp(s, m->sum, ZS_KV_HASH_BYTES) != 0) return zs_err_set(err, ZS_EFORMAT, "%s: checksum mismatch", what);
    return ZS_OK;
}
