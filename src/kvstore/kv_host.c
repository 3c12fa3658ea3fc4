/* The kvstore host tier: block payloads in host memory under a byte capacity, LFU eviction
 * with a recency tie-break, pin/unpin borrowing. One mutex. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kvstore/kv_internal.h"

struct zs_kv_host {
    pthread_mutex_t mu;
    kv_index_t ix;
    uint64_t capacity;
    zs_kv_tier_stats_t st;
};

static void host_free_ent(kv_ent_t *e) {
    free(e->data);
    free(e);
}

int zs_kv_host_open(uint64_t capacity, zs_kv_host_t **out, zs_err_t *err) {
    *out = NULL;
    if (capacity < 1) return zs_err_set(err, ZS_EINVAL, "kv host tier: capacity must be >= 1 byte");
    zs_kv_host_t *h = calloc(1, sizeof *h);
    if (h == NULL) return zs_err_set(err, ZS_ENOMEM, "kv host tier: out of memory");
    if (kv_index_init(&h->ix) != ZS_OK) {
        free(h);
        return zs_err_set(err, ZS_ENOMEM, "kv host tier: out of memory for the index");
    }
    int rc = pthread_mutex_init(&h->mu, NULL);
    if (rc != 0) {
        kv_index_destroy(&h->ix, host_free_ent);
        free(h);
        return zs_err_set(err, ZS_EIO, "kv host tier: pthread_mutex_init failed (%d)", rc);
    }
    h->capacity = capacity;
    *out = h;
    return ZS_OK;
}

void zs_kv_host_close(zs_kv_host_t *h) {
    if (h == NULL) return;
    kv_index_destroy(&h->ix, host_free_ent);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static int ns_eq(const kv_ent_t *e, const zs_kv_ns_t *ns) {
    return memcmp(e->ns.b, ns->b, ZS_KV_HASH_BYTES) == 0;
}

int zs_kv_host_put(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err) {
    char hex[65];
    zs_kv_key_hex(key, hex);
    if (len == 0 || data == NULL) return zs_err_set(err, ZS_EINVAL, "kv host put %.16s: empty block", hex);
    if (len > h->capacity)
        return zs_err_set(err, ZS_ERANGE, "kv host put %.16s: block of %zu bytes exceeds the capacity %llu",
                          hex, len, (unsigned long long)h->capacity);
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e != NULL && ns_eq(e, ns) && e->len == len) {
        kv_index_touch(&h->ix, e);
        pthread_mutex_unlock(&h->mu);
        return ZS_OK;
    }
    if (e != NULL) { /* same key, other namespace or size: cannot happen without a SHA-256 collision */
        if (e->pins > 0) {
            pthread_mutex_unlock(&h->mu);
            return zs_err_set(err, ZS_EBUSY, "kv host put %.16s: a different pinned block has this key", hex);
        }
        kv_index_remove(&h->ix, e);
        host_free_ent(e);
    }
    while (h->ix.bytes + len > h->capacity) {
        kv_ent_t *v = kv_index_victim(&h->ix, NULL);
        if (v == NULL) {
            pthread_mutex_unlock(&h->mu);
            return zs_err_set(err, ZS_EBUSY, "kv host put %.16s: pinned blocks leave no room for %zu bytes", hex,
                              len);
        }
        kv_index_remove(&h->ix, v);
        host_free_ent(v);
        h->st.evictions++;
    }
    pthread_mutex_unlock(&h->mu);
    /* Allocate and copy outside the lock, then insert (re-checking for a racing put). */
    e = calloc(1, sizeof *e);
    void *copy = malloc(len);
    if (e == NULL || copy == NULL) {
        free(e);
        free(copy);
        return zs_err_set(err, ZS_ENOMEM, "kv host put %.16s: out of memory for %zu bytes", hex, len);
    }
    memcpy(copy, data, len);
    e->key = *key;
    e->ns = *ns;
    e->block_index = block_index;
    e->bytes = len;
    e->len = len;
    e->data = copy;
    pthread_mutex_lock(&h->mu);
    int rc = ZS_OK;
    kv_ent_t *cur = kv_index_find(&h->ix, key);
    if (cur != NULL) {
        kv_index_touch(&h->ix, cur);
        host_free_ent(e);
    } else {
        while (h->ix.bytes + len > h->capacity) { /* others may have filled it meanwhile */
            kv_ent_t *v = kv_index_victim(&h->ix, NULL);
            if (v == NULL) break;
            kv_index_remove(&h->ix, v);
            host_free_ent(v);
            h->st.evictions++;
        }
        if (h->ix.bytes + len > h->capacity)
            rc = zs_err_set(err, ZS_EBUSY, "kv host put %.16s: pinned blocks leave no room for %zu bytes", hex, len);
        else if (kv_index_insert(&h->ix, e) != ZS_OK)
            rc = zs_err_set(err, ZS_ENOMEM, "kv host put %.16s: out of memory for the index", hex);
        if (rc != ZS_OK) host_free_ent(e);
        else {
            kv_index_touch(&h->ix, e);
            h->st.puts++;
        }
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

int zs_kv_host_get(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                   size_t *len, zs_err_t *err) {
    char hex[65];
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e == NULL || !ns_eq(e, ns)) {
        h->st.misses++;
        pthread_mutex_unlock(&h->mu);
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_ENOENT, "kv host get %.16s: not present", hex);
    }
    if (len) *len = e->len;
    if (cap < e->len) {
        size_t need = e->len;
        pthread_mutex_unlock(&h->mu);
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_ERANGE, "kv host get %.16s: buffer of %zu bytes, block has %zu", hex, cap, need);
    }
    memcpy(buf, e->data, e->len);
    kv_index_touch(&h->ix, e);
    h->st.hits++;
    h->st.restored_bytes += e->len;
    pthread_mutex_unlock(&h->mu);
    return ZS_OK;
}

int zs_kv_host_pin(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, const void **data,
                   size_t *len, zs_err_t *err) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e == NULL || !ns_eq(e, ns) || e->pins == UINT32_MAX) {
        h->st.misses++;
        pthread_mutex_unlock(&h->mu);
        char hex[65];
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_ENOENT, "kv host pin %.16s: not present", hex);
    }
    e->pins++;
    kv_index_touch(&h->ix, e);
    h->st.hits++;
    h->st.restored_bytes += e->len;
    *data = e->data;
    *len = e->len;
    pthread_mutex_unlock(&h->mu);
    return ZS_OK;
}

void zs_kv_host_unpin(zs_kv_host_t *h, const zs_kv_key_t *key) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e != NULL && e->pins > 0) e->pins--;
    pthread_mutex_unlock(&h->mu);
}

int zs_kv_host_contains(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    int r = e != NULL && ns_eq(e, ns);
    pthread_mutex_unlock(&h->mu);
    return r;
}

int zs_kv_host_evict(zs_kv_host_t *h, const zs_kv_key_t *key, zs_err_t *err) {
    char hex[65];
    zs_kv_key_hex(key, hex);
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    int rc = ZS_OK;
    if (e == NULL) rc = zs_err_set(err, ZS_ENOENT, "kv host evict %.16s: not present", hex);
    else if (e->pins > 0) rc = zs_err_set(err, ZS_EBUSY, "kv host evict %.16s: pinned (%u)", hex, e->pins);
    else {
        kv_index_remove(&h->ix, e);
        host_free_ent(e);
        h->st.evictions++;
    }
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void zs_kv_host_stats(zs_kv_host_t *h, zs_kv_tier_stats_t *out) {
    pthread_mutex_lock(&h->mu);
    *out = h->st;
    out->blocks = h->ix.count;
    out->bytes = h->ix.bytes;
    out->capacity = h->capacity;
    pthread_mutex_unlock(&h->mu);
}
