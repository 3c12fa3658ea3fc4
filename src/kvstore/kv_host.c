/* The kvstore host tier: equal-sized block payloads in one arena of fixed slots (mapped once,
 * so a caller can page-lock it for fast host<->GPU copies: zs_kv_host_arena), under a byte
 * capacity, LFU eviction with a recency tie-break, pin/unpin borrowing, and reservations
 * (a slot handed out for the caller to fill in place, e.g. by a GPU->host copy, invisible to
 * readers until committed). One mutex. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "kvstore/kv_internal.h"

struct zs_kv_host {
    pthread_mutex_t mu;
    kv_index_t ix;
    uint64_t capacity;           /* nslots * block_bytes */
    size_t block_bytes;
    uint8_t *arena;
    size_t arena_bytes;
    uint32_t nslots;
    uint32_t *free_slots;        /* stack */
    uint32_t nfree;
    zs_kv_tier_stats_t st;
};

static void *slot_ptr(const zs_kv_host_t *h, uint32_t slot) {
    return h->arena + (size_t)slot * h->block_bytes;
}

/* Returns the entry's slot to the free list and frees the entry (mu held, e not indexed). */
static void host_drop(zs_kv_host_t *h, kv_ent_t *e) {
    h->free_slots[h->nfree++] = e->slot;
    free(e);
}

int zs_kv_host_open(uint64_t capacity, size_t block_bytes, zs_kv_host_t **out, zs_err_t *err) {
    *out = NULL;
    if (block_bytes == 0) return zs_err_set(err, ZS_EINVAL, "kv host tier: block size must be >= 1 byte");
    if (capacity < block_bytes)
        return zs_err_set(err, ZS_EINVAL, "kv host tier: capacity of %llu bytes holds no block of %zu bytes",
                          (unsigned long long)capacity, block_bytes);
    uint64_t n = capacity / block_bytes;
    if (n > UINT32_MAX - 1 || n > SIZE_MAX / block_bytes)
        return zs_err_set(err, ZS_ERANGE, "kv host tier: %llu blocks of %zu bytes is too many",
                          (unsigned long long)n, block_bytes);
    zs_kv_host_t *h = calloc(1, sizeof *h);
    if (h == NULL) return zs_err_set(err, ZS_ENOMEM, "kv host tier: out of memory");
    h->nslots = (uint32_t)n;
    h->block_bytes = block_bytes;
    h->capacity = n * block_bytes;
    h->arena_bytes = (size_t)n * block_bytes;
    /* Reserved address space; pages arrive on first touch (or when the caller pins them). */
    void *a = mmap(NULL, h->arena_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (a == MAP_FAILED) {
        int e = errno;
        free(h);
        return zs_err_set(err, ZS_ENOMEM, "kv host tier: mmap of %zu bytes: %s", (size_t)n * block_bytes,
                          strerror(e));
    }
    h->arena = a;
    h->free_slots = malloc((size_t)n * sizeof *h->free_slots);
    if (h->free_slots == NULL || kv_index_init(&h->ix) != ZS_OK) {
        free(h->free_slots);
        munmap(h->arena, h->arena_bytes);
        free(h);
        return zs_err_set(err, ZS_ENOMEM, "kv host tier: out of memory for %llu slots", (unsigned long long)n);
    }
    for (uint32_t i = 0; i < h->nslots; i++) h->free_slots[i] = h->nslots - 1 - i; /* slot 0 first */
    h->nfree = h->nslots;
    int rc = pthread_mutex_init(&h->mu, NULL);
    if (rc != 0) {
        kv_index_destroy(&h->ix, NULL);
        free(h->free_slots);
        munmap(h->arena, h->arena_bytes);
        free(h);
        return zs_err_set(err, ZS_EIO, "kv host tier: pthread_mutex_init failed (%d)", rc);
    }
    *out = h;
    return ZS_OK;
}

void zs_kv_host_close(zs_kv_host_t *h) {
    if (h == NULL) return;
    kv_index_destroy(&h->ix, NULL);
    free(h->free_slots);
    munmap(h->arena, h->arena_bytes);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

void zs_kv_host_arena(zs_kv_host_t *h, void **base, size_t *bytes) {
    *base = h->arena;
    *bytes = h->arena_bytes;
}

size_t zs_kv_host_block_bytes(const zs_kv_host_t *h) { return h->block_bytes; }

static int ns_eq(const kv_ent_t *e, const zs_kv_ns_t *ns) {
    return memcmp(e->ns.b, ns->b, ZS_KV_HASH_BYTES) == 0;
}

/* A present, committed block of this namespace (mu held). */
static kv_ent_t *find_ready(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    kv_ent_t *e = kv_index_find(&h->ix, key);
    return e != NULL && !e->pending && ns_eq(e, ns) ? e : NULL;
}

/* A free slot, evicting the least valuable unpinned block if none is free (mu held); -1 when
 * every slot is pinned or being filled. */
static int64_t take_slot(zs_kv_host_t *h) {
    if (h->nfree == 0) {
        kv_ent_t *v = kv_index_victim(&h->ix, NULL);
        if (v == NULL) return -1;
        kv_index_remove(&h->ix, v);
        host_drop(h, v);
        h->st.evictions++;
    }
    return h->free_slots[--h->nfree];
}

/* Inserts a new entry for key in slot (mu held); ZS_ENOMEM leaves the slot free. */
static int add_entry(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                     uint32_t slot, int pending, kv_ent_t **out) {
    kv_ent_t *e = calloc(1, sizeof *e);
    if (e == NULL) {
        h->free_slots[h->nfree++] = slot;
        return ZS_ENOMEM;
    }
    e->key = *key;
    e->ns = *ns;
    e->block_index = block_index;
    e->bytes = h->block_bytes;
    e->slot = slot;
    e->data = slot_ptr(h, slot);
    e->len = h->block_bytes;
    e->pending = pending;
    e->pins = pending ? 1 : 0;
    if (kv_index_insert(&h->ix, e) != ZS_OK) {
        host_drop(h, e);
        return ZS_ENOMEM;
    }
    *out = e;
    return ZS_OK;
}

static int check_len(const zs_kv_host_t *h, size_t len, const char *what, const zs_kv_key_t *key, zs_err_t *err) {
    if (len == h->block_bytes) return ZS_OK;
    char hex[65];
    zs_kv_key_hex(key, hex);
    return zs_err_set(err, ZS_EINVAL, "kv host %s %.16s: block of %zu bytes, this tier holds blocks of %zu", what,
                      hex, len, h->block_bytes);
}

int zs_kv_host_put(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                   const void *data, size_t len, zs_err_t *err) {
    char hex[65];
    if (data == NULL) {
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_EINVAL, "kv host put %.16s: no data", hex);
    }
    int rc = check_len(h, len, "put", key, err);
    if (rc != ZS_OK) return rc;
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e != NULL && ns_eq(e, ns)) { /* present, or being filled: same key = same content */
        if (!e->pending) kv_index_touch(&h->ix, e);
        pthread_mutex_unlock(&h->mu);
        return ZS_OK;
    }
    if (e != NULL) { /* same key, other namespace: cannot happen without a SHA-256 collision */
        if (e->pins > 0) {
            pthread_mutex_unlock(&h->mu);
            zs_kv_key_hex(key, hex);
            return zs_err_set(err, ZS_EBUSY, "kv host put %.16s: a different pinned block has this key", hex);
        }
        kv_index_remove(&h->ix, e);
        host_drop(h, e);
    }
    int64_t slot = take_slot(h);
    if (slot < 0) {
        pthread_mutex_unlock(&h->mu);
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_EBUSY, "kv host put %.16s: pinned blocks leave no room", hex);
    }
    /* Filled under a pin so that the copy runs outside the lock. */
    rc = add_entry(h, ns, key, block_index, (uint32_t)slot, 1, &e);
    pthread_mutex_unlock(&h->mu);
    if (rc != ZS_OK) {
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, rc, "kv host put %.16s: out of memory for the index", hex);
    }
    memcpy(e->data, data, len);
    pthread_mutex_lock(&h->mu);
    e->pending = 0;
    e->pins--;
    kv_index_touch(&h->ix, e);
    h->st.puts++;
    pthread_mutex_unlock(&h->mu);
    return ZS_OK;
}

int zs_kv_host_reserve(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, uint64_t block_index,
                       void **slot, zs_err_t *err) {
    char hex[65];
    *slot = NULL;
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e != NULL && ns_eq(e, ns)) {
        pthread_mutex_unlock(&h->mu);
        return 1; /* present or being filled by someone else */
    }
    if (e != NULL && e->pins > 0) {
        pthread_mutex_unlock(&h->mu);
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, ZS_EBUSY, "kv host reserve %.16s: a different pinned block has this key", hex);
    }
    if (e != NULL) {
        kv_index_remove(&h->ix, e);
        host_drop(h, e);
    }
    int64_t s = take_slot(h);
    int rc = s < 0 ? ZS_EBUSY : add_entry(h, ns, key, block_index, (uint32_t)s, 1, &e);
    pthread_mutex_unlock(&h->mu);
    if (rc != ZS_OK) {
        zs_kv_key_hex(key, hex);
        return zs_err_set(err, rc, rc == ZS_EBUSY ? "kv host reserve %.16s: pinned blocks leave no room"
                                                  : "kv host reserve %.16s: out of memory for the index", hex);
    }
    *slot = e->data;
    return ZS_OK;
}

/* The pending entry of key (mu held), or NULL. */
static kv_ent_t *find_pending(zs_kv_host_t *h, const zs_kv_key_t *key) {
    kv_ent_t *e = kv_index_find(&h->ix, key);
    return e != NULL && e->pending ? e : NULL;
}

int zs_kv_host_commit(zs_kv_host_t *h, const zs_kv_key_t *key, int keep_pinned) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = find_pending(h, key);
    if (e != NULL) {
        e->pending = 0;
        if (!keep_pinned) e->pins--;
        kv_index_touch(&h->ix, e);
        h->st.puts++;
    }
    pthread_mutex_unlock(&h->mu);
    return e != NULL ? ZS_OK : ZS_ENOENT;
}

void zs_kv_host_abort(zs_kv_host_t *h, const zs_kv_key_t *key) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = find_pending(h, key);
    if (e != NULL) {
        kv_index_remove(&h->ix, e);
        host_drop(h, e);
    }
    pthread_mutex_unlock(&h->mu);
}

int zs_kv_host_get(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key, void *buf, size_t cap,
                   size_t *len, zs_err_t *err) {
    char hex[65];
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = find_ready(h, ns, key);
    if (e == NULL) {
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
    kv_ent_t *e = find_ready(h, ns, key);
    if (e == NULL || e->pins == UINT32_MAX) {
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
    if (len) *len = e->len;
    pthread_mutex_unlock(&h->mu);
    return ZS_OK;
}

const void *kv_host_borrow(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = find_ready(h, ns, key);
    const void *p = NULL;
    if (e != NULL && e->pins < UINT32_MAX) {
        e->pins++;
        p = e->data;
    }
    pthread_mutex_unlock(&h->mu);
    return p;
}

void zs_kv_host_unpin(zs_kv_host_t *h, const zs_kv_key_t *key) {
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    if (e != NULL && !e->pending && e->pins > 0) e->pins--;
    pthread_mutex_unlock(&h->mu);
}

int zs_kv_host_contains(zs_kv_host_t *h, const zs_kv_ns_t *ns, const zs_kv_key_t *key) {
    pthread_mutex_lock(&h->mu);
    int r = find_ready(h, ns, key) != NULL;
    pthread_mutex_unlock(&h->mu);
    return r;
}

int zs_kv_host_evict(zs_kv_host_t *h, const zs_kv_key_t *key, zs_err_t *err) {
    char hex[65];
    zs_kv_key_hex(key, hex);
    pthread_mutex_lock(&h->mu);
    kv_ent_t *e = kv_index_find(&h->ix, key);
    int rc = ZS_OK;
    if (e == NULL || e->pending) rc = zs_err_set(err, ZS_ENOENT, "kv host evict %.16s: not present", hex);
    else if (e->pins > 0) rc = zs_err_set(err, ZS_EBUSY, "kv host evict %.16s: pinned (%u)", hex, e->pins);
    else {
        kv_index_remove(&h->ix, e);
        host_drop(h, e);
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
