/* KV block addressing: SHA-256 helper, namespaces (model identity + tenant salt), chained
 * block keys, key hex names and layout descriptors. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvstore/kv_internal.h"

#define KV_NS_TAG "zerostart-kv-ns-v1"

int kv_sha256(const void *const *parts, const size_t *lens, int n, uint8_t out[ZS_KV_HASH_BYTES]) {
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) return ZS_ENOMEM;
    int ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;
    for (int i = 0; ok && i < n; i++)
        if (lens[i] > 0) ok = EVP_DigestUpdate(ctx, parts[i], lens[i]) == 1;
    unsigned int olen = 0;
    if (ok) ok = EVP_DigestFinal_ex(ctx, out, &olen) == 1 && olen == ZS_KV_HASH_BYTES;
    EVP_MD_CTX_free(ctx);
    return ok ? ZS_OK : ZS_EIO;
}

static void put_u64le(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

int zs_kv_namespace(const char *model_id, const char *tenant_salt, zs_kv_ns_t *out, zs_err_t *err) {
    if (model_id == NULL || out == NULL) return zs_err_set(err, ZS_EINVAL, "kv namespace: model id missing");
    if (model_id[0] == '\0') return zs_err_set(err, ZS_EINVAL, "kv namespace: empty model id");
    uint8_t mlen[8], has = tenant_salt != NULL, slen[8];
    put_u64le(mlen, strlen(model_id));
    put_u64le(slen, tenant_salt ? strlen(tenant_salt) : 0);
    const void *parts[6] = {KV_NS_TAG, mlen, model_id, &has, slen, tenant_salt};
    size_t lens[6] = {strlen(KV_NS_TAG), 8, strlen(model_id), 1, 8, tenant_salt ? strlen(tenant_salt) : 0};
    int rc = kv_sha256(parts, lens, has ? 6 : 4, out->b);
    if (rc != ZS_OK) return zs_err_set(err, rc, "kv namespace: SHA-256 failed for model id '%.64s'", model_id);
    return ZS_OK;
}

int zs_kv_chain_keys(const zs_kv_ns_t *ns, const int32_t *ids, size_t n, int32_t block_size,
                     zs_kv_key_t *keys_out, zs_err_t *err) {
    if (ns == NULL || (n > 0 && (ids == NULL || keys_out == NULL)))
        return zs_err_set(err, ZS_EINVAL, "kv chain keys: missing argument");
    if (block_size < 1 || block_size > 65536)
        return zs_err_set(err, ZS_EINVAL, "kv chain keys: bad block size %d", block_size);
    size_t nblocks = n / (size_t)block_size, bs = (size_t)block_size;
    if (nblocks > (size_t)INT32_MAX) return zs_err_set(err, ZS_ERANGE, "kv chain keys: %zu blocks", nblocks);
    uint8_t *buf = malloc(bs * 4);
    if (buf == NULL) return zs_err_set(err, ZS_ENOMEM, "kv chain keys: out of memory (block size %d)", block_size);
    zs_kv_key_t prev;
    memset(&prev, 0, sizeof prev);
    for (size_t b = 0; b < nblocks; b++) {
        for (size_t j = 0; j < bs; j++) {
            int32_t t = ids[b * bs + j];
            if (t < 0) {
                free(buf);
                return zs_err_set(err, ZS_EINVAL, "kv chain keys: negative token id %d at position %zu", t,
                                  b * bs + j);
            }
            for (int k = 0; k < 4; k++) buf[j * 4 + (size_t)k] = (uint8_t)((uint32_t)t >> (8 * k));
        }
        const void *parts[3] = {ns->b, prev.b, buf};
        size_t lens[3] = {ZS_KV_HASH_BYTES, ZS_KV_HASH_BYTES, bs * 4};
        int rc = kv_sha256(parts, lens, 3, keys_out[b].b);
        if (rc != ZS_OK) {
            free(buf);
            return zs_err_set(err, rc, "kv chain keys: SHA-256 failed at block %zu", b);
        }
        prev = keys_out[b];
    }
    free(buf);
    return (int)nblocks;
}

void zs_kv_key_hex(const zs_kv_key_t *key, char out[2 * ZS_KV_HASH_BYTES + 1]) {
    static const char hx[] = "0123456789abcdef";
    for (int i = 0; i < ZS_KV_HASH_BYTES; i++) {
        out[2 * i] = hx[key->b[i] >> 4];
        out[2 * i + 1] = hx[key->b[i] & 15];
    }
    out[2 * ZS_KV_HASH_BYTES] = '\0';
}

int zs_kv_layout_desc(const zs_kv_layout_t *l, char *out, size_t cap, zs_err_t *err) {
    const char *dt = zs_dtype_name(l->dtype);
    int k = snprintf(out, cap, "kv1 layers=%d kvh=%d hd=%d bs=%d dt=%s bytes=%zu", l->nlayers, l->nkv_heads,
                     l->head_dim, l->block_size, dt ? dt : "?", l->block_bytes);
    if (k < 0 || (size_t)k >= cap || (size_t)k >= ZS_KV_LAYOUT_MAX)
        return zs_err_set(err, ZS_ERANGE, "kv layout descriptor does not fit %zu bytes", cap);
    return ZS_OK;
}
