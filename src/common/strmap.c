/* Open-addressing string -> index map: the name index behind checkpoint tensor lookups. */
#include "common/strmap.h"

#include <stdlib.h>
#include <string.h>

uint64_t zs_hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static int strmap_alloc(zs_strmap_t *m, size_t cap) {
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = calloc(cap, sizeof *m->vals);
    if (m->keys == NULL || m->vals == NULL) {
        free(m->keys);
        free(m->vals);
        m->keys = NULL;
        m->vals = NULL;
        return -1;
    }
    m->cap = cap;
    m->len = 0;
    return 0;
}

int zs_strmap_init(zs_strmap_t *m, size_t expected) {
    size_t cap = 16;
    while (cap < expected * 2 + 1) cap <<= 1;
    return strmap_alloc(m, cap);
}

void zs_strmap_free(zs_strmap_t *m) {
    free(m->keys);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

static size_t strmap_slot(const zs_strmap_t *m, const char *key) {
    size_t i = (size_t)zs_hash_str(key) & (m->cap - 1);
    while (m->keys[i] != NULL && strcmp(m->keys[i], key) != 0) i = (i + 1) & (m->cap - 1);
    return i;
}

int zs_strmap_put(zs_strmap_t *m, const char *key, size_t val) {
    if ((m->len + 1) * 2 > m->cap) {
        zs_strmap_t bigger;
        if (strmap_alloc(&bigger, m->cap * 2) != 0) return -1;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->keys[i] == NULL) continue;
            size_t s = strmap_slot(&bigger, m->keys[i]);
            bigger.keys[s] = m->keys[i];
            bigger.vals[s] = m->vals[i];
            bigger.len++;
        }
        zs_strmap_free(m);
        *m = bigger;
    }
    size_t s = strmap_slot(m, key);
    if (m->keys[s] != NULL) return 1;
    m->keys[s] = key;
    m->vals[s] = val;
    m->len++;
    return 0;
}

int zs_strmap_get(const zs_strmap_t *m, const char *key, size_t *val) {
    if (m->cap == 0) return 0;
    size_t s = strmap_slot(m, key);
    if (m->keys[s] == NULL) return 0;
    *val = m->vals[s];
    return 1;
}
