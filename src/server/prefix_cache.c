/* Prefix cache: chained block hashes, an open-addressing table (linear probing, backward
 * shift deletion) from block hash to owner, owner records with LRU stamps. */
#include "server/prefix_cache.h"

#include <stdlib.h>
#include <string.h>

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void zs_pcache_hashes(const zs_kv_ns_t *ns, const int32_t *ids, int32_t nblocks, int32_t bs, uint64_t *out) {
    uint64_t seed;
    memcpy(&seed, ns->b, sizeof seed);
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ seed;
    for (int32_t b = 0; b < nblocks; b++) {
        uint64_t x = mix64(h);
        for (int32_t i = 0; i < bs; i++) x = mix64(x ^ (uint32_t)ids[(int64_t)b * bs + i]);
        h = x;
        out[b] = h;
    }
}

int zs_pcache_init(zs_pcache_t *c, int32_t block_size, int32_t max_owners, size_t max_entries) {
    memset(c, 0, sizeof *c);
    c->bs = block_size;
    c->max_owners = max_owners;
    c->max_entries = max_entries;
    size_t cap = 16;
    while (cap < 2 * max_entries) cap *= 2;
    c->owners = calloc((size_t)max_owners, sizeof *c->owners);
    c->tab = malloc(cap * sizeof *c->tab);
    if (c->owners == NULL || c->tab == NULL) {
        zs_pcache_destroy(c);
        return -1;
    }
    for (int32_t i = 0; i < max_owners; i++) c->owners[i].seq = -1;
    for (size_t i = 0; i < cap; i++) c->tab[i].owner = -1;
    c->mask = cap - 1;
    return 0;
}

void zs_pcache_destroy(zs_pcache_t *c) {
    if (c->owners)
        for (int32_t i = 0; i < c->max_owners; i++) {
            free(c->owners[i].tokens);
            free(c->owners[i].hashes);
        }
    free(c->owners);
    free(c->tab);
    memset(c, 0, sizeof *c);
}

static size_t find_slot(const zs_pcache_t *c, uint64_t h) {
    size_t i = (size_t)h & c->mask;
    while (c->tab[i].owner >= 0 && c->tab[i].hash != h) i = (i + 1) & c->mask;
    return i;
}

static void del_slot(zs_pcache_t *c, size_t i) {
    c->tab[i].owner = -1;
    c->nentries--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & c->mask;
        if (c->tab[j].owner < 0) return;
        size_t k = (size_t)c->tab[j].hash & c->mask;
        /* move j back to i when its home k is not cyclically in (i, j] */
        int in = i <= j ? (k > i && k <= j) : (k > i || k <= j);
        if (!in) {
            c->tab[i] = c->tab[j];
            c->tab[j].owner = -1;
            i = j;
        }
    }
}

static int32_t match(zs_pcache_t *c, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n, int32_t max_blocks,
                     int32_t *owner, int touch);

int32_t zs_pcache_match(zs_pcache_t *c, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n,
                        int32_t max_blocks, int32_t *owner) {
    return match(c, ns, ids, n, max_blocks, owner, 1);
}

int32_t zs_pcache_peek(zs_pcache_t *c, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n, int32_t max_blocks) {
    int32_t owner;
    return match(c, ns, ids, n, max_blocks, &owner, 0);
}

static int32_t match(zs_pcache_t *c, const zs_kv_ns_t *ns, const int32_t *ids, int64_t n, int32_t max_blocks,
                     int32_t *owner, int touch) {
    *owner = -1;
    int64_t nb = n / c->bs;
    if (nb > max_blocks) nb = max_blocks;
    if (nb <= 0 || c->nentries == 0) return 0;
    uint64_t *h = malloc((size_t)nb * sizeof *h);
    if (h == NULL) return 0; /* a cache miss is always correct */
    zs_pcache_hashes(ns, ids, (int32_t)nb, c->bs, h);
    int32_t found = 0;
    for (int64_t b = nb - 1; b >= 0 && !found; b--) {
        size_t s = find_slot(c, h[b]);
        if (c->tab[s].owner < 0 || c->tab[s].block != b) continue;
        zs_pc_owner_t *o = &c->owners[c->tab[s].owner];
        size_t ntok = (size_t)(b + 1) * (size_t)c->bs;
        if (o->nblocks > b && memcmp(o->ns.b, ns->b, sizeof ns->b) == 0 &&
            memcmp(o->tokens, ids, ntok * sizeof *ids) == 0) {
            found = (int32_t)(b + 1);
            *owner = c->tab[s].owner;
            if (touch) o->last_use = ++c->clock;
        }
    }
    free(h);
    return found;
}

int32_t zs_pcache_owner_of(const zs_pcache_t *c, int32_t seq) {
    for (int32_t i = 0; i < c->max_owners; i++)
        if (c->owners[i].seq == seq && seq >= 0) return i;
    return -1;
}

int32_t zs_pcache_register(zs_pcache_t *c, const zs_kv_ns_t *ns, int32_t seq, const int32_t *ids,
                           int32_t nblocks, int holder) {
    if (nblocks <= 0 || seq < 0) return -1;
    int32_t idx = -1;
    for (int32_t i = 0; i < c->max_owners && idx < 0; i++)
        if (c->owners[i].seq < 0) idx = i;
    if (idx < 0) return -1;
    zs_pc_owner_t *o = &c->owners[idx];
    size_t ntok = (size_t)nblocks * (size_t)c->bs;
    o->tokens = malloc(ntok * sizeof *o->tokens);
    o->hashes = malloc((size_t)nblocks * sizeof *o->hashes);
    if (o->tokens == NULL || o->hashes == NULL) {
        free(o->tokens);
        free(o->hashes);
        o->tokens = NULL;
        o->hashes = NULL;
        return -1;
    }
    memcpy(o->tokens, ids, ntok * sizeof *ids);
    zs_pcache_hashes(ns, ids, nblocks, c->bs, o->hashes);
    o->ns = *ns;
    o->seq = seq;
    o->nblocks = nblocks;
    o->holder = holder;
    o->last_use = ++c->clock;
    for (int32_t b = 0; b < nblocks; b++) {
        if (c->nentries >= c->max_entries) break;
        size_t s = find_slot(c, o->hashes[b]);
        if (c->tab[s].owner >= 0) continue; /* first owner wins */
        c->tab[s].hash = o->hashes[b];
        c->tab[s].owner = idx;
        c->tab[s].block = b;
        c->nentries++;
    }
    return idx;
}

void zs_pcache_rebind(zs_pcache_t *c, int32_t idx, int32_t seq, int holder) {
    c->owners[idx].seq = seq;
    c->owners[idx].holder = holder;
    c->owners[idx].last_use = ++c->clock;
}

int32_t zs_pcache_drop(zs_pcache_t *c, int32_t idx) {
    zs_pc_owner_t *o = &c->owners[idx];
    for (int32_t b = 0; b < o->nblocks; b++) {
        size_t s = find_slot(c, o->hashes[b]);
        if (c->tab[s].owner != idx) continue;
        del_slot(c, s);
        /* another owner holding the same block takes the entry over */
        for (int32_t k = 0; k < c->max_owners; k++) {
            const zs_pc_owner_t *q = &c->owners[k];
            if (k == idx || q->seq < 0 || q->nblocks <= b || q->hashes[b] != o->hashes[b]) continue;
            size_t t = find_slot(c, o->hashes[b]);
            c->tab[t].hash = o->hashes[b];
            c->tab[t].owner = k;
            c->tab[t].block = b;
            c->nentries++;
            break;
        }
    }
    int32_t seq = o->seq;
    free(o->tokens);
    free(o->hashes);
    memset(o, 0, sizeof *o);
    o->seq = -1;
    return seq;
}

static int32_t lru(const zs_pcache_t *c, int skip_kept) {
    int32_t best = -1;
    for (int32_t i = 0; i < c->max_owners; i++) {
        const zs_pc_owner_t *o = &c->owners[i];
        if (o->seq >= 0 && o->holder && !(skip_kept && o->kept) &&
            (best < 0 || o->last_use < c->owners[best].last_use))
            best = i;
    }
    return best;
}

int32_t zs_pcache_lru_holder(const zs_pcache_t *c) { return lru(c, 0); }
int32_t zs_pcache_lru_holder_unkept(const zs_pcache_t *c) { return lru(c, 1); }

void zs_pcache_keep(zs_pcache_t *c, int32_t idx) { c->owners[idx].kept = 1; }

int32_t zs_pcache_nholders(const zs_pcache_t *c) {
    int32_t n = 0;
    for (int32_t i = 0; i < c->max_owners; i++) n += c->owners[i].seq >= 0 && c->owners[i].holder;
    return n;
}
